// `oclip bench index`: what building and searching an index costs at scale.
//
//  1. Writes N synthetic clustered unit vectors (index/synthetic_embeddings.h)
//     as `oclip embed` would (float16 img_emb partitions of 100,000 rows and
//     their metadata), and computes the exact top-k of held-out queries from
//     the same distribution while writing (blocked matrix products).
//  2. Runs `oclip index build` over them as a child process, so that its wall
//     time and peak resident memory (getrusage of the child) are the build's
//     alone.
//  3. Loads the index as the server does (memory-mapped where FAISS can) and
//     measures queries per second for one batch of all queries and for single
//     queries one after another (with their latency percentiles), and the
//     recall of those held-out queries against the exact search.
// One JSON line on stdout.

#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "core/mapped_file.h"
#include "core/npy.h"
#include "core/status.h"
#include "index/embedding_files.h"
#include "index/index_builder.h"
#include "index/index_folder.h"
#include "index/synthetic_embeddings.h"

extern char** environ;

namespace oclip::cli {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kPartitionRows = 100'000;

struct BenchIndexFlags {
  int64_t vectors = 1'000'000;
  int64_t dim = 512;
  int64_t clusters = 1000;
  int64_t queries = 1000;
  int64_t k = 10;
  std::string max_index_memory_usage = "4G";
  std::string min_recall = "0.9";
  int64_t seconds = 10;
  std::string work_dir;
};

// The exact top-k ids of each query, kept as the data streams past.
class ExactTopK {
 public:
  ExactTopK(torch::Tensor queries, int64_t k)
      : queries_(std::move(queries)),
        k_(k),
        scores_(torch::full({queries_.size(0), k}, -INFINITY)),
        ids_(torch::full({queries_.size(0), k}, -1, torch::kLong)) {}

  // rows: [n, d] float, the vectors with ids first_id .. first_id + n - 1.
  void Add(const torch::Tensor& rows, int64_t first_id) {
    torch::Tensor scores = torch::mm(queries_, rows.t());
    auto [top_scores, top_ids] = scores.topk(std::min<int64_t>(k_, rows.size(0)), 1);
    torch::Tensor all_scores = torch::cat({scores_, top_scores}, 1);
    torch::Tensor all_ids = torch::cat({ids_, top_ids + first_id}, 1);
    auto [best, order] = all_scores.topk(k_, 1);
    scores_ = best;
    ids_ = all_ids.gather(1, order);
  }

  // ids [q, k], best first.
  const torch::Tensor& ids() const { return ids_; }

 private:
  torch::Tensor queries_;
  int64_t k_;
  torch::Tensor scores_;
  torch::Tensor ids_;
};

// Writes the embedding folder and returns the exact neighbours of `queries`.
absl::StatusOr<torch::Tensor> WriteEmbeddings(const BenchIndexFlags& flags,
                                              index::ClusteredGenerator& generator,
                                              const torch::Tensor& queries,
                                              const std::string& folder) {
  std::error_code error;
  fs::create_directories(folder + "/img_emb", error);
  fs::create_directories(folder + "/metadata", error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", folder));
  ExactTopK exact(queries, flags.k);
  for (int64_t first = 0, p = 0; first < flags.vectors; first += kPartitionRows, ++p) {
    const int64_t rows = std::min(kPartitionRows, flags.vectors - first);
    std::vector<float> values = generator.Sample(rows);
    OCLIP_RETURN_IF_ERROR(WriteNpyFloat16(absl::StrFormat("%s/img_emb/img_emb_%d.npy", folder, p),
                                          {rows, flags.dim}, values));
    std::string metadata;
    for (int64_t r = 0; r < rows; ++r) {
      absl::StrAppendFormat(&metadata,
                            "{\"key\":\"%09d\",\"caption\":\"synthetic %d\",\"url\":null}\n",
                            first + r, first + r);
    }
    OCLIP_RETURN_IF_ERROR(
        WriteStringToFile(absl::StrFormat("%s/metadata/metadata_%d.jsonl", folder, p), metadata));
    // What the index holds is the float16 rounding of the vectors.
    torch::Tensor block = torch::from_blob(values.data(), {rows, flags.dim}, torch::kFloat)
                              .to(torch::kHalf)
                              .to(torch::kFloat);
    exact.Add(block, first);
  }
  return exact.ids();
}

struct ChildRun {
  int exit_code = 0;
  double seconds = 0;
  int64_t peak_rss_bytes = 0;
};

// Runs this executable with `args`, stdout and stderr into files.
absl::StatusOr<ChildRun> RunSelf(const std::vector<std::string>& args, const std::string& out,
                                 const std::string& err) {
  std::vector<std::string> argv_storage = {"/proc/self/exe"};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_storage) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const auto start = BenchClock::now();
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return ErrnoToStatus(spawned, "cannot start oclip index build");
  int status = 0;
  struct rusage usage = {};
  if (wait4(pid, &status, 0, &usage) != pid) return ErrnoToStatus(errno, "wait4");
  ChildRun run;
  run.seconds = SecondsSince(start);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  run.peak_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux: KiB.
  return run;
}

struct Recall {
  double first_in_top_k = 0;  // 1-recall@k
  double intersection = 0;    // |approx ∩ exact| / k
};

Recall MeasureRecall(const std::vector<std::vector<index::SearchHit>>& hits,
                     const torch::Tensor& exact_ids, int64_t k) {
  Recall recall;
  auto exact = exact_ids.accessor<int64_t, 2>();
  for (size_t q = 0; q < hits.size(); ++q) {
    std::set<int64_t> found;
    for (const index::SearchHit& hit : hits[q]) found.insert(hit.id);
    recall.first_in_top_k += found.count(exact[q][0]) ? 1 : 0;
    int64_t common = 0;
    for (int64_t j = 0; j < k; ++j) common += found.count(exact[q][j]);
    recall.intersection += static_cast<double>(common) / static_cast<double>(k);
  }
  recall.first_in_top_k /= static_cast<double>(hits.size());
  recall.intersection /= static_cast<double>(hits.size());
  return recall;
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return values[static_cast<size_t>(p * static_cast<double>(values.size() - 1))];
}

absl::Status BenchIndex(const BenchIndexFlags& flags) {
  if (flags.vectors < 1 || flags.dim < 1 || flags.clusters < 1 || flags.queries < 1 ||
      flags.k < 1) {
    return absl::InvalidArgumentError("--vectors, --dim, --clusters, --queries, --k must be >= 1");
  }
  OCLIP_ASSIGN_OR_RETURN(const std::string work, BenchWorkDir(flags.work_dir, "oclip-bench-index"));
  index::ClusteredGenerator generator(static_cast<int>(flags.dim), static_cast<int>(flags.clusters),
                                      /*rank=*/4, /*spread=*/1.0f, /*seed=*/7);
  std::vector<float> query_values = generator.Sample(flags.queries);
  const torch::Tensor queries =
      torch::from_blob(query_values.data(), {flags.queries, flags.dim}, torch::kFloat);

  auto start = BenchClock::now();
  OCLIP_ASSIGN_OR_RETURN(torch::Tensor exact_ids,
                         WriteEmbeddings(flags, generator, queries, work + "/embeddings"));
  const double generate_seconds = SecondsSince(start);

  OCLIP_ASSIGN_OR_RETURN(
      ChildRun build,
      RunSelf({"index", "build", "--embeddings", work + "/embeddings", "--index-folder",
               work + "/index", "--max-index-memory-usage", flags.max_index_memory_usage,
               "--min-recall", flags.min_recall},
              work + "/build.out", work + "/build.err"));
  if (build.exit_code != 0) {
    OCLIP_ASSIGN_OR_RETURN(std::string err, ReadFileToString(work + "/build.err"));
    return absl::InternalError(absl::StrCat("oclip index build failed: ", err));
  }
  OCLIP_ASSIGN_OR_RETURN(std::string infos_json, ReadFileToString(work + "/build.out"));
  OCLIP_ASSIGN_OR_RETURN(index::IndexInfos infos, index::IndexInfosFromJson(infos_json));

  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<index::IndexFolder> folder,
                         index::IndexFolder::Open(work + "/index", "image"));
  const int k = static_cast<int>(flags.k);
  const double seconds = static_cast<double>(flags.seconds);
  std::vector<std::vector<index::SearchHit>> batch_hits;
  OCLIP_ASSIGN_OR_RETURN(double batch_qps, MeasureThroughput(seconds, flags.queries, [&] {
                           OCLIP_ASSIGN_OR_RETURN(batch_hits,
                                                  folder->Search(query_values, flags.queries, k));
                           return absl::OkStatus();
                         }));
  const Recall recall = MeasureRecall(batch_hits, exact_ids, flags.k);

  std::vector<double> latencies_ms;
  int64_t next = 0;
  OCLIP_ASSIGN_OR_RETURN(double single_qps, MeasureThroughput(seconds, 1, [&] {
                           const int64_t q = next++ % flags.queries;
                           const auto query_start = BenchClock::now();
                           absl::Span<const float> query(&query_values[q * flags.dim],
                                                         static_cast<size_t>(flags.dim));
                           OCLIP_RETURN_IF_ERROR(folder->Search(query, 1, k).status());
                           latencies_ms.push_back(1000 * SecondsSince(query_start));
                           return absl::OkStatus();
                         }));
  if (flags.work_dir.empty()) fs::remove_all(work);

  nlohmann::json result = {
      {"benchmark", "index"},
      {"vectors", flags.vectors},
      {"dim", flags.dim},
      {"max_index_memory_usage", flags.max_index_memory_usage},
      {"min_recall", infos.min_recall},
      {"factory", infos.plan.factory},
      {"nprobe", infos.nprobe},
      {"ef_search", infos.ef_search},
      {"generate_seconds", generate_seconds},
      {"build_seconds", build.seconds},
      {"build_peak_rss_bytes", build.peak_rss_bytes},
      {"index_size_bytes", infos.index_size_bytes},
      {"memory_mapped", folder->vectors().memory_mapped()},
      {"tuning_recall_at_k", infos.recall_at_k},
      {"k", flags.k},
      {"queries", flags.queries},
      {"recall_at_k", recall.first_in_top_k},
      {"intersection_recall_at_k", recall.intersection},
      {"batch_queries_per_second", batch_qps},
      {"single_queries_per_second", single_qps},
      {"single_latency_ms_p50", Percentile(latencies_ms, 0.5)},
      {"single_latency_ms_p99", Percentile(latencies_ms, 0.99)},
      {"threads", torch::get_num_threads()}};
  std::cout << result.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunBenchIndex(int argc, char** argv) {
  BenchIndexFlags values;
  FlagSet flags("bench index",
                "Build time, peak memory and search speed of an index over N synthetic\n"
                "clustered vectors, and its recall on held-out queries against exact search.");
  flags.AddInt("vectors", &values.vectors, "vectors to index (1000000)");
  flags.AddInt("dim", &values.dim, "their dimension (512)");
  flags.AddInt("clusters", &values.clusters, "clusters of the synthetic data (1000)");
  flags.AddInt("queries", &values.queries, "held-out queries (1000)");
  flags.AddInt("k", &values.k, "hits per query (10)");
  flags.AddString("max-index-memory-usage", &values.max_index_memory_usage,
                  "the build's memory budget (4G)");
  flags.AddString("min-recall", &values.min_recall, "the build's recall target (0.9)");
  flags.AddInt("seconds", &values.seconds, "measuring time of each search figure (10)");
  flags.AddString("work-dir", &values.work_dir, "where the data goes (default: a temp dir)");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  // The exact search's matrix products use every core.
  torch::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  absl::Status status = BenchIndex(values);
  if (!status.ok()) {
    std::cerr << "oclip bench index: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
