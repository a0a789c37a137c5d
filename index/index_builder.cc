#include "index/index_builder.h"

#include <faiss/IVFlib.h>
#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "index/embedding_files.h"
#include "nlohmann/json.hpp"

namespace oclip {
namespace index {
namespace {

using Clock = std::chrono::steady_clock;
using FaissId = faiss::Index::idx_t;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr int kPqCandidates[] = {256, 128, 64, 48, 32, 24, 16, 8, 4};
constexpr int64_t kIdBytes = 8;          // ids stored next to codes in IVF lists
constexpr int64_t kPerListOverhead = 64;  // std::vector headers etc. per list
constexpr int kMinPointsPerCentroid = 39;
constexpr int kPqCentroids = 256;

int ChooseNlist(int64_t n) {
  const double target = 4.0 * std::sqrt(static_cast<double>(n));
  int64_t nlist = 1;
  while (nlist * 2 <= target) nlist *= 2;
  const int64_t lo = (n + 255) / 256;
  const int64_t hi = std::max<int64_t>(1, n / kMinPointsPerCentroid);
  nlist = std::max(nlist, lo);
  nlist = std::min(nlist, hi);
  return static_cast<int>(std::max<int64_t>(1, nlist));
}

int64_t IvfPqBytes(int64_t n, int d, int nlist, int m, bool opq) {
  return n * (m + kIdBytes) + int64_t{nlist} * d * 4 + int64_t{d} * kPqCentroids * 4 +
         (opq ? int64_t{d} * d * 4 : 0) + int64_t{nlist} * kPerListOverhead;
}

// Floyd's algorithm: `count` distinct values of [0, n) without an O(n) table,
// returned sorted so that reads walk the files in order.
std::vector<int64_t> SampleIds(int64_t n, int64_t count, uint64_t seed) {
  count = std::min(count, n);
  std::mt19937_64 rng(seed);
  std::unordered_set<int64_t> chosen;
  chosen.reserve(count * 2);
  for (int64_t j = n - count; j < n; ++j) {
    const int64_t t = std::uniform_int_distribution<int64_t>(0, j)(rng);
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  std::vector<int64_t> out(chosen.begin(), chosen.end());
  std::sort(out.begin(), out.end());
  return out;
}

// Per-query exact top list, merged over chunks: (score, id), best first.
using TopList = std::vector<std::pair<float, int64_t>>;

void MergeTop(TopList* top, const float* scores, const FaissId* ids, int k, int64_t offset,
              int keep) {
  for (int j = 0; j < k; ++j) {
    if (ids[j] >= 0) top->emplace_back(scores[j], ids[j] + offset);
  }
  std::sort(top->begin(), top->end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  if (static_cast<int>(top->size()) > keep) top->resize(keep);
}

// Drops `self` and keeps the first k.
std::vector<int64_t> WithoutSelf(const int64_t* ids, int n, int64_t self, int k) {
  std::vector<int64_t> out;
  for (int j = 0; j < n && static_cast<int>(out.size()) < k; ++j) {
    if (ids[j] != self) out.push_back(ids[j]);
  }
  return out;
}

struct Recall {
  double one = 0;           // 1-recall@k
  double intersection = 0;  // |approx ∩ exact| / k
};

struct TuningSet {
  std::vector<int64_t> query_ids;
  std::vector<float> queries;          // [nq, d]
  std::vector<std::vector<int64_t>> exact;  // per query, self dropped, <= k ids
  int k = 0;
};

absl::StatusOr<Recall> MeasureRecall(const faiss::Index& index, const TuningSet& set) {
  const int64_t nq = static_cast<int64_t>(set.query_ids.size());
  const int kk = set.k + 1;  // one more: the query's own row is dropped
  std::vector<float> scores(nq * kk);
  std::vector<FaissId> labels(nq * kk);
  try {
    index.search(nq, set.queries.data(), kk, scores.data(), labels.data());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("FAISS search while tuning failed: ", e.what()));
  }
  std::vector<int64_t> ids(labels.begin(), labels.end());
  Recall r;
  int64_t counted = 0;
  for (int64_t i = 0; i < nq; ++i) {
    const auto& exact = set.exact[i];
    if (exact.empty()) continue;
    const auto approx = WithoutSelf(&ids[i * kk], kk, set.query_ids[i], set.k);
    ++counted;
    if (std::find(approx.begin(), approx.end(), exact[0]) != approx.end()) r.one += 1;
    int hits = 0;
    for (int64_t id : approx) {
      if (std::find(exact.begin(), exact.end(), id) != exact.end()) ++hits;
    }
    r.intersection += static_cast<double>(hits) / exact.size();
  }
  if (counted > 0) {
    r.one /= counted;
    r.intersection /= counted;
  } else {
    r.one = r.intersection = 1.0;
  }
  return r;
}

// Smallest value in [lo, hi] whose recall reaches `target`, assuming recall
// grows with the value: doubling, then bisection. `set_param` applies it.
template <typename SetParam>
absl::StatusOr<std::pair<int, Recall>> TuneParameter(const faiss::Index& index,
                                                     const TuningSet& set, int lo, int hi,
                                                     double target, SetParam set_param) {
  int value = lo;
  set_param(value);
  OCLIP_ASSIGN_OR_RETURN(Recall recall, MeasureRecall(index, set));
  int below = lo - 1;  // largest value known to miss the target
  while (recall.one < target && value < hi) {
    below = value;
    value = std::min(hi, value * 2);
    set_param(value);
    OCLIP_ASSIGN_OR_RETURN(recall, MeasureRecall(index, set));
  }
  if (recall.one < target) return std::make_pair(value, recall);
  // Bisection on (below, value]: `value` meets the target.
  while (value - below > 1) {
    const int mid = below + (value - below) / 2;
    set_param(mid);
    OCLIP_ASSIGN_OR_RETURN(Recall r, MeasureRecall(index, set));
    if (r.one >= target) {
      value = mid;
      recall = r;
    } else {
      below = mid;
    }
  }
  set_param(value);
  return std::make_pair(value, recall);
}

const char* KindName(IndexKind kind) {
  switch (kind) {
    case IndexKind::kFlat: return "flat";
    case IndexKind::kHnsw: return "hnsw";
    case IndexKind::kIvfFlat: return "ivf_flat";
    case IndexKind::kIvfPq: return "ivf_pq";
  }
  return "unknown";
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ",
                                                  ec.message()));
  return absl::OkStatus();
}

absl::Status ValidateOptions(const IndexBuildOptions& o) {
  if (o.index_path.empty()) return absl::InvalidArgumentError("index_path is empty");
  if (o.max_index_memory_usage <= 0) {
    return absl::InvalidArgumentError("max_index_memory_usage must be positive");
  }
  if (!(o.min_recall >= 0 && o.min_recall <= 1)) {
    return absl::InvalidArgumentError("min_recall must be in [0, 1]");
  }
  if (o.recall_k < 1 || o.num_tuning_queries < 1 || o.add_chunk_rows < 1 ||
      o.kmeans_iterations < 1 || o.train_points_per_centroid < kMinPointsPerCentroid) {
    return absl::InvalidArgumentError(absl::StrCat(
        "recall_k, num_tuning_queries, add_chunk_rows, kmeans_iterations must be >= 1 and "
        "train_points_per_centroid >= ", kMinPointsPerCentroid));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<IndexPlan> ChooseIndex(int64_t n, int d, int64_t budget,
                                      const IndexChoiceOptions& options) {
  if (n < 1 || d < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot index ", n, " vectors of dimension ", d));
  }
  if (budget < 1) return absl::InvalidArgumentError("max_index_memory_usage must be positive");
  IndexPlan plan;
  const int64_t flat_bytes = n * d * 4;
  if (n < options.flat_threshold ||
      (n < options.flat_if_fits_threshold && flat_bytes <= budget)) {
    if (flat_bytes > budget) {
      return absl::InvalidArgumentError(absl::StrCat(
          n, " vectors are too few to train a compressed index (need ", options.flat_threshold,
          "); the flat index needs max_index_memory_usage >= ", flat_bytes, " bytes, got ",
          budget));
    }
    plan.kind = IndexKind::kFlat;
    plan.factory = "Flat";
    plan.code_size = int64_t{d} * 4;
    plan.estimated_bytes = flat_bytes;
    return plan;
  }
  if (!options.should_be_memory_mappable) {
    const int64_t m = static_cast<int64_t>(
        std::floor((static_cast<double>(budget) / (4.0 * n) - d) / 2.0));
    if (m >= 8) {
      plan.kind = IndexKind::kHnsw;
      plan.hnsw_m = static_cast<int>(std::min<int64_t>(m, 32));
      plan.factory = absl::StrCat("HNSW", plan.hnsw_m);
      plan.code_size = int64_t{d} * 4;
      plan.estimated_bytes = n * (int64_t{d} * 4 + int64_t{plan.hnsw_m} * 2 * 4);
      return plan;
    }
  }
  plan.nlist = ChooseNlist(n);
  const int64_t ivf_flat_bytes = n * (int64_t{d} * 4 + kIdBytes) +
                                 int64_t{plan.nlist} * d * 4 +
                                 int64_t{plan.nlist} * kPerListOverhead;
  if (ivf_flat_bytes <= budget) {
    plan.kind = IndexKind::kIvfFlat;
    plan.factory = absl::StrCat("IVF", plan.nlist, ",Flat");
    plan.code_size = int64_t{d} * 4;
    plan.estimated_bytes = ivf_flat_bytes;
    return plan;
  }
  int64_t minimum = -1;
  for (int m : kPqCandidates) {
    if (m >= d || d % m != 0) continue;
    const int64_t bytes = IvfPqBytes(n, d, plan.nlist, m, options.use_opq);
    minimum = bytes;  // candidates shrink, so the last one seen is the minimum
    if (bytes > budget) continue;
    plan.kind = IndexKind::kIvfPq;
    plan.pq_m = m;
    plan.code_size = m;
    plan.estimated_bytes = bytes;
    plan.factory = absl::StrCat(options.use_opq ? absl::StrCat("OPQ", m, ",") : "", "IVF",
                                plan.nlist, ",PQ", m, "x8np");
    return plan;
  }
  if (minimum < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dimension ", d, " is divisible by none of the PQ sizes 4..256; no compressed index"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "max_index_memory_usage ", budget, " bytes is too small for ", n, " vectors of dimension ",
      d, ": the smallest index (IVF", plan.nlist, " with the smallest PQ) needs at least ",
      minimum, " bytes"));
}

std::string IndexInfosToJson(const IndexInfos& i) {
  nlohmann::json j;
  j["index_type"] = KindName(i.plan.kind);
  j["index_key"] = i.plan.factory;
  j["index_path"] = i.index_path;
  j["metric"] = "inner_product";
  j["nb_vectors"] = i.num_vectors;
  j["vectors_dimension"] = i.dim;
  j["nlist"] = i.plan.nlist;
  j["pq_m"] = i.plan.pq_m;
  j["hnsw_m"] = i.plan.hnsw_m;
  j["code_size"] = i.plan.code_size;
  j["estimated_size_bytes"] = i.plan.estimated_bytes;
  j["train_size"] = i.train_size;
  j["nprobe"] = i.nprobe;
  j["efSearch"] = i.ef_search;
  j["recall_k"] = i.recall_k;
  j["min_recall"] = i.min_recall;
  j["recall_at_k"] = i.recall_at_k;
  j["intersection_recall_at_k"] = i.intersection_recall_at_k;
  j["recall_target_met"] = i.recall_target_met;
  j["num_tuning_queries"] = i.num_tuning_queries;
  j["max_index_memory_usage"] = i.max_index_memory_usage;
  j["size_in_bytes"] = i.index_size_bytes;
  j["train_seconds"] = i.train_seconds;
  j["add_seconds"] = i.add_seconds;
  j["tune_seconds"] = i.tune_seconds;
  j["build_seconds"] = i.build_seconds;
  return j.dump(2);
}

absl::StatusOr<IndexInfos> IndexInfosFromJson(const std::string& text) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    IndexInfos i;
    const std::string kind = j.at("index_type").get<std::string>();
    if (kind == "flat") {
      i.plan.kind = IndexKind::kFlat;
    } else if (kind == "hnsw") {
      i.plan.kind = IndexKind::kHnsw;
    } else if (kind == "ivf_flat") {
      i.plan.kind = IndexKind::kIvfFlat;
    } else if (kind == "ivf_pq") {
      i.plan.kind = IndexKind::kIvfPq;
    } else {
      return absl::DataLossError(absl::StrCat("index_infos: unknown index_type '", kind, "'"));
    }
    i.plan.factory = j.at("index_key").get<std::string>();
    i.index_path = j.at("index_path").get<std::string>();
    i.num_vectors = j.at("nb_vectors").get<int64_t>();
    i.dim = j.at("vectors_dimension").get<int>();
    i.plan.nlist = j.at("nlist").get<int>();
    i.plan.pq_m = j.at("pq_m").get<int>();
    i.plan.hnsw_m = j.at("hnsw_m").get<int>();
    i.plan.code_size = j.at("code_size").get<int64_t>();
    i.plan.estimated_bytes = j.at("estimated_size_bytes").get<int64_t>();
    i.train_size = j.at("train_size").get<int64_t>();
    i.nprobe = j.at("nprobe").get<int>();
    i.ef_search = j.at("efSearch").get<int>();
    i.recall_k = j.at("recall_k").get<int>();
    i.min_recall = j.at("min_recall").get<double>();
    i.recall_at_k = j.at("recall_at_k").get<double>();
    i.intersection_recall_at_k = j.at("intersection_recall_at_k").get<double>();
    i.recall_target_met = j.at("recall_target_met").get<bool>();
    i.num_tuning_queries = j.at("num_tuning_queries").get<int>();
    i.max_index_memory_usage = j.at("max_index_memory_usage").get<int64_t>();
    i.index_size_bytes = j.at("size_in_bytes").get<int64_t>();
    i.train_seconds = j.at("train_seconds").get<double>();
    i.add_seconds = j.at("add_seconds").get<double>();
    i.tune_seconds = j.at("tune_seconds").get<double>();
    i.build_seconds = j.at("build_seconds").get<double>();
    return i;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("index_infos is not valid: ", e.what()));
  }
}

absl::StatusOr<BuiltIndex> BuildIndex(const IndexBuildOptions& options) {
  const auto start = Clock::now();
  OCLIP_RETURN_IF_ERROR(ValidateOptions(options));
  OCLIP_ASSIGN_OR_RETURN(auto files,
                         EmbeddingFiles::Open(options.embeddings_folder, options.file_prefix));
  const int64_t n = files->rows();
  const int d = files->dim();
  OCLIP_ASSIGN_OR_RETURN(IndexPlan plan,
                         ChooseIndex(n, d, options.max_index_memory_usage, options.choice));
  LogInfo(absl::StrCat("index: ", n, " vectors of dimension ", d, " -> ", plan.factory,
                       " (estimated ", plan.estimated_bytes, " bytes, budget ",
                       options.max_index_memory_usage, ")"));

  IndexInfos infos;
  infos.plan = plan;
  infos.index_path = options.index_path;
  infos.num_vectors = n;
  infos.dim = d;
  infos.recall_k = options.recall_k;
  infos.min_recall = options.min_recall;
  infos.max_index_memory_usage = options.max_index_memory_usage;

  std::unique_ptr<faiss::Index> index;
  try {
    index.reset(faiss::index_factory(d, plan.factory.c_str(), faiss::METRIC_INNER_PRODUCT));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("FAISS cannot create '", plan.factory, "': ", e.what()));
  }
  faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index.get());
  faiss::IndexHNSW* hnsw = nullptr;
  if (ivf != nullptr) {
    ivf->cp.niter = options.kmeans_iterations;
    ivf->cp.seed = static_cast<int>(options.seed & 0x7fffffff);
    if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(ivf)) {
      // PQ codebooks are trained on residuals; FAISS would use up to 256
      // points per centroid and 25 iterations per sub-quantiser, which
      // dominates the build on small machines for no measurable recall.
      ivfpq->pq.cp.niter = options.kmeans_iterations;
      ivfpq->pq.cp.max_points_per_centroid = options.train_points_per_centroid;
      ivfpq->pq.cp.seed = ivf->cp.seed + 1;
    }
  } else {
    hnsw = dynamic_cast<faiss::IndexHNSW*>(index.get());
  }

  // Train.
  const auto train_start = Clock::now();
  if (!index->is_trained) {
    int64_t want = int64_t{options.train_points_per_centroid} * std::max(plan.nlist, 1);
    if (plan.kind == IndexKind::kIvfPq) {
      want = std::max<int64_t>(want, int64_t{kMinPointsPerCentroid} * kPqCentroids);
    }
    const std::vector<int64_t> train_ids = SampleIds(n, want, options.seed);
    std::vector<float> train(train_ids.size() * d);
    OCLIP_RETURN_IF_ERROR(files->ReadRowsById(train_ids, train.data()));
    try {
      index->train(static_cast<FaissId>(train_ids.size()), train.data());
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("FAISS training of ", plan.factory, " on ",
                                              train_ids.size(), " vectors failed: ", e.what()));
    }
    infos.train_size = static_cast<int64_t>(train_ids.size());
  }
  infos.train_seconds = SecondsSince(train_start);

  // Tuning queries: rows of the data, drawn with another seed.
  TuningSet set;
  set.k = static_cast<int>(std::min<int64_t>(options.recall_k, n - 1));
  set.query_ids = SampleIds(n, options.num_tuning_queries, options.seed ^ 0x9e3779b97f4a7c15ull);
  const int64_t nq = static_cast<int64_t>(set.query_ids.size());
  set.queries.resize(nq * d);
  OCLIP_RETURN_IF_ERROR(files->ReadRowsById(set.query_ids, set.queries.data()));
  std::vector<TopList> exact_top(nq);
  const int exact_k = set.k + 1;

  // One pass over the files: add each chunk and scan it exactly for the
  // tuning queries' ground truth.
  const auto add_start = Clock::now();
  double exact_seconds = 0;
  std::vector<float> chunk;
  std::vector<float> chunk_scores(nq * exact_k);
  std::vector<FaissId> chunk_ids(nq * exact_k);
  for (int64_t first = 0; first < n; first += options.add_chunk_rows) {
    const int64_t count = std::min(options.add_chunk_rows, n - first);
    chunk.resize(count * d);
    OCLIP_RETURN_IF_ERROR(files->ReadRows(first, count, chunk.data()));
    try {
      index->add(count, chunk.data());
      if (set.k > 0) {
        const auto exact_start = Clock::now();
        faiss::IndexFlatIP flat(d);
        flat.add(count, chunk.data());
        flat.search(nq, set.queries.data(), exact_k, chunk_scores.data(), chunk_ids.data());
        for (int64_t q = 0; q < nq; ++q) {
          MergeTop(&exact_top[q], &chunk_scores[q * exact_k], &chunk_ids[q * exact_k], exact_k,
                   first, exact_k);
        }
        exact_seconds += SecondsSince(exact_start);
      }
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("FAISS failed adding rows [", first, ", ",
                                              first + count, "): ", e.what()));
    }
  }
  infos.add_seconds = SecondsSince(add_start) - exact_seconds;

  // Tune.
  const auto tune_start = Clock::now();
  set.exact.resize(nq);
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<int64_t> ids;
    for (const auto& [score, id] : exact_top[q]) ids.push_back(id);
    set.exact[q] = WithoutSelf(ids.data(), static_cast<int>(ids.size()), set.query_ids[q], set.k);
  }
  infos.num_tuning_queries = static_cast<int>(nq);
  Recall recall;
  if (set.k == 0) {
    recall.one = recall.intersection = 1.0;
  } else if (ivf != nullptr) {
    const int hi = static_cast<int>(std::min<size_t>(ivf->nlist, 4096));
    OCLIP_ASSIGN_OR_RETURN(auto tuned,
                           TuneParameter(*index, set, 1, hi, options.min_recall,
                                         [ivf](int v) { ivf->nprobe = v; }));
    infos.nprobe = tuned.first;
    recall = tuned.second;
  } else if (hnsw != nullptr) {
    OCLIP_ASSIGN_OR_RETURN(
        auto tuned, TuneParameter(*index, set, std::max(16, exact_k), 4096, options.min_recall,
                                  [hnsw](int v) { hnsw->hnsw.efSearch = v; }));
    infos.ef_search = tuned.first;
    recall = tuned.second;
  } else {
    OCLIP_ASSIGN_OR_RETURN(recall, MeasureRecall(*index, set));
  }
  infos.recall_at_k = recall.one;
  infos.intersection_recall_at_k = recall.intersection;
  infos.recall_target_met = recall.one >= options.min_recall;
  infos.tune_seconds = SecondsSince(tune_start);
  if (!infos.recall_target_met) {
    LogWarning(absl::StrCat("index: recall@", set.k, " ", recall.one, " < min_recall ",
                            options.min_recall, " even at the largest search parameter"));
  }

  // Write.
  try {
    faiss::write_index(index.get(), options.index_path.c_str());
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("FAISS cannot write ", options.index_path, ": ", e.what()));
  }
  std::error_code ec;
  infos.index_size_bytes = static_cast<int64_t>(std::filesystem::file_size(options.index_path, ec));
  if (ec) return absl::InternalError(absl::StrCat(options.index_path, ": ", ec.message()));
  infos.build_seconds = SecondsSince(start);
  const std::string infos_path =
      options.index_infos_path.empty()
          ? (std::filesystem::path(options.index_path).parent_path() / "index_infos.json")
                .string()
          : options.index_infos_path;
  OCLIP_RETURN_IF_ERROR(WriteFileAtomically(infos_path, IndexInfosToJson(infos)));
  LogInfo(absl::StrCat("index: wrote ", options.index_path, " (", infos.index_size_bytes,
                       " bytes), recall@", set.k, " ", infos.recall_at_k, " (intersection ",
                       infos.intersection_recall_at_k, ") at nprobe ", infos.nprobe,
                       " efSearch ", infos.ef_search, " in ", infos.build_seconds, " s"));

  BuiltIndex built;
  built.infos = infos;
  OCLIP_ASSIGN_OR_RETURN(built.index,
                         VectorIndex::FromFaiss(std::move(index), infos.nprobe, infos.ef_search));
  return built;
}

}  // namespace index
}  // namespace oclip
