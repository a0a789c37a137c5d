#include "index/index_builder.h"

#include <faiss/IndexFlat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/mapped_file.h"
#include "core/npy.h"
#include "gtest/gtest.h"
#include "index/embedding_files.h"
#include "index/metadata_store.h"
#include "index/vector_index.h"
#include "tests/index/test_data.h"

namespace oclip {
namespace index {
namespace {

using FaissId = faiss::Index::idx_t;

std::string Join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

// The first integer after `marker` in `text`, or -1.
int64_t NumberAfter(absl::string_view text, absl::string_view marker) {
  const size_t at = text.find(marker);
  if (at == absl::string_view::npos) return -1;
  size_t end = at + marker.size();
  while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
  int64_t value = -1;
  if (!absl::SimpleAtoi(text.substr(at + marker.size(), end - at - marker.size()), &value)) {
    return -1;
  }
  return value;
}

// Exact top-k by inner product, for reference.
std::vector<FaissId> ExactTopK(const std::vector<float>& base, const std::vector<float>& queries,
                               int d, int k) {
  faiss::IndexFlatIP flat(d);
  flat.add(static_cast<FaissId>(base.size() / d), base.data());
  const FaissId nq = static_cast<FaissId>(queries.size() / d);
  std::vector<float> scores(nq * k);
  std::vector<FaissId> ids(nq * k);
  flat.search(nq, queries.data(), k, scores.data(), ids.data());
  return ids;
}

// 1-recall@k: fraction of queries whose exact nearest neighbour is in the
// approximate top k (the measure index_builder.h documents).
double OneRecall(const std::vector<FaissId>& exact, int exact_k, const SearchResult& approx) {
  int hits = 0;
  for (int64_t q = 0; q < approx.num_queries; ++q) {
    const auto begin = approx.ids.begin() + q * approx.k;
    if (std::find(begin, begin + approx.k, exact[q * exact_k]) != begin + approx.k) ++hits;
  }
  return static_cast<double>(hits) / approx.num_queries;
}

// ---------------------------------------------------------------- choice rule

TEST(ChooseIndexTest, SmallCollectionsAreFlat) {
  auto tiny = ChooseIndex(5'000, 512, int64_t{1} << 30);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->kind, IndexKind::kFlat);
  EXPECT_EQ(tiny->factory, "Flat");
  auto modest = ChooseIndex(50'000, 512, int64_t{1} << 30);
  ASSERT_TRUE(modest.ok()) << modest.status();
  EXPECT_EQ(modest->kind, IndexKind::kFlat);
  EXPECT_LE(modest->estimated_bytes, int64_t{1} << 30);
}

TEST(ChooseIndexTest, LargeCollectionUnderABudgetIsIvfPqThatFits) {
  const int64_t n = 200'000;
  const int d = 512;
  const int64_t budget = n * 72 + (int64_t{4} << 20);
  for (bool mappable : {false, true}) {
    IndexChoiceOptions options;
    options.should_be_memory_mappable = mappable;
    auto plan = ChooseIndex(n, d, budget, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->kind, IndexKind::kIvfPq) << plan->factory;
    EXPECT_LE(plan->estimated_bytes, budget);
    EXPECT_LE(plan->code_size * n, budget);
    EXPECT_LT(plan->code_size, int64_t{d} * 4);  // compressed
    EXPECT_EQ(d % plan->pq_m, 0);
    // The documented nlist rule: <= 4·sqrt(N), within FAISS's training bounds.
    EXPECT_LE(plan->nlist, 4 * std::sqrt(static_cast<double>(n)));
    EXPECT_GE(plan->nlist, n / 256);
    EXPECT_LE(plan->nlist, n / 39);
    // The next larger code would not have fitted.
    const auto bigger = ChooseIndex(n, d, plan->estimated_bytes - 1, options);
    if (bigger.ok()) {
      EXPECT_LT(bigger->code_size, plan->code_size);
    }
  }
}

TEST(ChooseIndexTest, GenerousBudgetPrefersHnswUnlessMemoryMappable) {
  const int64_t n = 1'000'000;
  const int d = 512;
  const int64_t budget = int64_t{8} << 30;
  auto hnsw = ChooseIndex(n, d, budget);
  ASSERT_TRUE(hnsw.ok()) << hnsw.status();
  EXPECT_EQ(hnsw->kind, IndexKind::kHnsw);
  EXPECT_GE(hnsw->hnsw_m, 8);
  EXPECT_LE(hnsw->estimated_bytes, budget);

  IndexChoiceOptions mappable;
  mappable.should_be_memory_mappable = true;
  auto ivf = ChooseIndex(n, d, budget, mappable);
  ASSERT_TRUE(ivf.ok()) << ivf.status();
  EXPECT_EQ(ivf->kind, IndexKind::kIvfFlat);
  EXPECT_LE(ivf->estimated_bytes, budget);
}

TEST(ChooseIndexTest, BudgetTooSmallIsInvalidArgumentNamingTheMinimum) {
  const int64_t n = 200'000;
  const int d = 512;
  auto plan = ChooseIndex(n, d, n * 4);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << plan.status();
  const int64_t minimum = NumberAfter(plan.status().message(), "at least ");
  ASSERT_GT(minimum, 0) << plan.status();
  EXPECT_TRUE(ChooseIndex(n, d, minimum).ok());
  EXPECT_EQ(ChooseIndex(n, d, minimum - 1).status().code(), absl::StatusCode::kInvalidArgument);

  // Too few vectors to train anything and too little room for them flat.
  auto tiny = ChooseIndex(100, 512, 1000);
  EXPECT_EQ(tiny.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NumberAfter(tiny.status().message(), ">= "), 100 * 512 * 4) << tiny.status();
}

// ------------------------------------------------------- 200k vectors, IVF-PQ

// One build shared by the checks below. They run as one test: ctest starts
// a process per test, which would redo the build for each.
class Build200kTest : public ::testing::Test {
 public:
  static constexpr int64_t kRows = 200'000;
  static constexpr int kDim = 512;
  static constexpr int kK = 10;
  static constexpr int64_t kPartitionRows[] = {60'000, 50'000, 50'000, 40'000};

  static void SetUpTestSuite() {
    const auto start = std::chrono::steady_clock::now();
    dir_ = new std::string(MakeTempDir("build200k"));
    const std::string emb = Join(*dir_, "img_emb");
    std::filesystem::create_directories(emb);
    ClusteredGenerator gen(kDim, /*clusters=*/1000, /*rank=*/4, /*spread=*/1.0f, /*seed=*/7);
    int64_t first = 0;
    for (size_t p = 0; p < std::size(kPartitionRows); ++p) {
      const std::vector<float> part = gen.Sample(kPartitionRows[p]);
      ASSERT_TRUE(WriteNpyFloat32(Join(emb, absl::StrCat("img_emb_", p, ".npy")),
                                  {kPartitionRows[p], kDim}, part)
                      .ok());
      first += kPartitionRows[p];
    }
    ASSERT_EQ(first, kRows);
    // Held out: drawn from the same distribution, never indexed.
    held_out_ = new std::vector<float>(gen.Sample(500));
    const double data_seconds = std::chrono::duration<double>(
        std::chrono::steady_clock::now() - start).count();

    options_ = new IndexBuildOptions;
    options_->embeddings_folder = emb;
    options_->file_prefix = "img_emb";
    options_->index_path = Join(*dir_, "image.index");
    // Room for 64-byte codes plus ids and centroids: forces PQ, well below
    // the 400 MB of float32 vectors.
    options_->max_index_memory_usage = kRows * (64 + 8) + (int64_t{4} << 20);
    options_->choice.should_be_memory_mappable = true;
    options_->min_recall = 0.98;
    options_->recall_k = kK;
    options_->seed = 1;
    auto built = BuildIndex(*options_);
    ASSERT_TRUE(built.ok()) << built.status();
    built_ = new BuiltIndex(std::move(*built));
    std::cout << "[ data generated and written in " << data_seconds << " s ]\n"
              << IndexInfosToJson(built_->infos) << "\n";
  }

  static void TearDownTestSuite() {
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);
    delete built_;
    delete options_;
    delete held_out_;
    delete dir_;
    built_ = nullptr;
    options_ = nullptr;
    held_out_ = nullptr;
    dir_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(built_, nullptr) << "the build in SetUpTestSuite failed"; }

  static std::vector<float> AllRows() {
    auto files = EmbeddingFiles::Open(options_->embeddings_folder, "img_emb");
    EXPECT_TRUE(files.ok());
    std::vector<float> all(kRows * kDim);
    EXPECT_TRUE((*files)->ReadRows(0, kRows, all.data()).ok());
    return all;
  }

  static std::string* dir_;
  static std::vector<float>* held_out_;
  static IndexBuildOptions* options_;
  static BuiltIndex* built_;
};

std::string* Build200kTest::dir_ = nullptr;
std::vector<float>* Build200kTest::held_out_ = nullptr;
IndexBuildOptions* Build200kTest::options_ = nullptr;
BuiltIndex* Build200kTest::built_ = nullptr;

void CompressedIndexMeetsRecallOnHeldOutQueriesWithinBudget() {
  SCOPED_TRACE("CompressedIndexMeetsRecallOnHeldOutQueriesWithinBudget");
  using T = Build200kTest;
  const IndexInfos& infos = T::built_->infos;
  EXPECT_EQ(infos.plan.kind, IndexKind::kIvfPq) << infos.plan.factory;
  EXPECT_LT(infos.plan.code_size, int64_t{T::kDim} * 4);
  EXPECT_LE(infos.index_size_bytes, T::options_->max_index_memory_usage);
  EXPECT_EQ(static_cast<int64_t>(std::filesystem::file_size(T::options_->index_path)),
            infos.index_size_bytes);
  EXPECT_TRUE(infos.recall_target_met);

  const std::vector<FaissId> exact = ExactTopK(T::AllRows(), *T::held_out_, T::kDim, T::kK);
  auto loaded = VectorIndex::Load(T::options_->index_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto approx = (*loaded)->Search(*T::held_out_, T::held_out_->size() / T::kDim, T::kK);
  ASSERT_TRUE(approx.ok()) << approx.status();
  const double recall = OneRecall(exact, T::kK, *approx);
  std::cout << "[ held-out 1-recall@10 " << recall << " at nprobe " << (*loaded)->nprobe()
            << " ]\n";
  EXPECT_GE(recall, 0.95);
}

void IndexInfosJsonHasTheMeasuredNumbers() {
  SCOPED_TRACE("IndexInfosJsonHasTheMeasuredNumbers");
  using T = Build200kTest;
  auto text = ReadFileToString(Join(*T::dir_, "index_infos.json"));
  ASSERT_TRUE(text.ok()) << text.status();
  auto infos = IndexInfosFromJson(*text);
  ASSERT_TRUE(infos.ok()) << infos.status();
  const IndexInfos& built = T::built_->infos;
  EXPECT_EQ(infos->plan.factory, built.plan.factory);
  EXPECT_EQ(infos->num_vectors, T::kRows);
  EXPECT_EQ(infos->dim, T::kDim);
  EXPECT_EQ(infos->plan.nlist, built.plan.nlist);
  EXPECT_EQ(infos->plan.code_size, built.plan.code_size);
  EXPECT_EQ(infos->nprobe, built.nprobe);
  EXPECT_GE(infos->nprobe, 1);
  EXPECT_LE(infos->nprobe, infos->plan.nlist);
  EXPECT_DOUBLE_EQ(infos->recall_at_k, built.recall_at_k);
  EXPECT_GE(infos->recall_at_k, T::options_->min_recall);
  EXPECT_GT(infos->intersection_recall_at_k, 0.0);
  EXPECT_LE(infos->intersection_recall_at_k, 1.0);
  EXPECT_EQ(infos->index_size_bytes,
            static_cast<int64_t>(std::filesystem::file_size(T::options_->index_path)));
  EXPECT_GT(infos->build_seconds, 0.0);
  EXPECT_GE(infos->build_seconds, infos->train_seconds + infos->add_seconds);
  EXPECT_GT(infos->train_size, 0);
  EXPECT_EQ(infos->num_tuning_queries, T::options_->num_tuning_queries);
}

void LoadedIndexReturnsTheSameResultsAsTheBuiltOne() {
  SCOPED_TRACE("LoadedIndexReturnsTheSameResultsAsTheBuiltOne");
  using T = Build200kTest;
  auto loaded = VectorIndex::Load(T::options_->index_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE((*loaded)->memory_mapped());
  EXPECT_EQ((*loaded)->size(), T::kRows);
  EXPECT_EQ((*loaded)->nprobe(), T::built_->infos.nprobe);
  const int64_t nq = T::held_out_->size() / T::kDim;
  auto a = T::built_->index->Search(*T::held_out_, nq, T::kK);
  auto b = (*loaded)->Search(*T::held_out_, nq, T::kK);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->ids, b->ids);
  ASSERT_EQ(a->scores.size(), b->scores.size());
  for (size_t i = 0; i < a->scores.size(); ++i) EXPECT_FLOAT_EQ(a->scores[i], b->scores[i]);
}

void ConcurrentSearchesMatchASerialOne() {
  SCOPED_TRACE("ConcurrentSearchesMatchASerialOne");
  using T = Build200kTest;
  auto loaded = VectorIndex::Load(T::options_->index_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const VectorIndex& index = **loaded;
  const int64_t nq = 50;
  const std::vector<float> queries(T::held_out_->begin(), T::held_out_->begin() + nq * T::kDim);
  auto serial = index.Search(queries, nq, T::kK);
  ASSERT_TRUE(serial.ok());
  std::vector<absl::StatusOr<SearchResult>> results(4, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      // Single queries, as a server would send them.
      SearchResult merged;
      merged.num_queries = nq;
      merged.k = T::kK;
      for (int64_t q = 0; q < nq; ++q) {
        auto one = index.Search(absl::MakeConstSpan(queries).subspan(q * T::kDim, T::kDim), 1, T::kK);
        if (!one.ok()) {
          results[t] = one.status();
          return;
        }
        merged.ids.insert(merged.ids.end(), one->ids.begin(), one->ids.end());
        merged.scores.insert(merged.scores.end(), one->scores.begin(), one->scores.end());
      }
      results[t] = std::move(merged);
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& result : results) {
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->ids, serial->ids);
  }
}

void SearchResultsJoinTheRightMetadata() {
  SCOPED_TRACE("SearchResultsJoinTheRightMetadata");
  using T = Build200kTest;
  // Metadata keyed the way an embedding job would: partition and row.
  const std::string db_path = Join(*T::dir_, "metadata.sqlite");
  auto store = MetadataStore::Open(db_path);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<MetadataRecord> records;
  records.reserve(T::kRows);
  int64_t id = 0;
  for (size_t p = 0; p < std::size(T::kPartitionRows); ++p) {
    for (int64_t r = 0; r < T::kPartitionRows[p]; ++r, ++id) {
      records.push_back({id, absl::StrCat("p", p, "_r", r), absl::StrCat("caption ", id), "",
                         static_cast<int64_t>(p), r, ""});
    }
  }
  ASSERT_TRUE((*store)->Insert(records).ok());

  // Query with stored vectors: each should find itself, and every hit must
  // come back with the metadata of exactly that row.
  const std::vector<int64_t> query_ids = {0, 59'999, 60'000, 123'456, 199'999};
  auto files = EmbeddingFiles::Open(T::options_->embeddings_folder, "img_emb");
  ASSERT_TRUE(files.ok());
  std::vector<float> queries(query_ids.size() * T::kDim);
  ASSERT_TRUE((*files)->ReadRowsById(query_ids, queries.data()).ok());
  auto result = T::built_->index->Search(queries, query_ids.size(), T::kK);
  ASSERT_TRUE(result.ok());
  auto joined = (*store)->Lookup(result->ids);
  ASSERT_TRUE(joined.ok()) << joined.status();
  int self_found = 0;
  for (size_t q = 0; q < query_ids.size(); ++q) {
    for (int j = 0; j < T::kK; ++j) {
      const int64_t hit = result->ids[q * T::kK + j];
      const auto& record = (*joined)[q * T::kK + j];
      ASSERT_TRUE(record.has_value()) << hit;
      EXPECT_EQ(record->id, hit);
      EXPECT_EQ(*record, records[hit]);
      if (hit == query_ids[q]) ++self_found;
    }
  }
  EXPECT_EQ(self_found, static_cast<int>(query_ids.size()));
}

TEST_F(Build200kTest, BuildsAndServesA200kVectorCompressedIndex) {
  CompressedIndexMeetsRecallOnHeldOutQueriesWithinBudget();
  IndexInfosJsonHasTheMeasuredNumbers();
  LoadedIndexReturnsTheSameResultsAsTheBuiltOne();
  ConcurrentSearchesMatchASerialOne();
  SearchResultsJoinTheRightMetadata();
}

// ----------------------------------------------------------- smaller builds

TEST(BuildIndexTest, Float16InputBuildsAFlatIndexThatFindsItsRows) {
  const std::string dir = MakeTempDir("fp16");
  const std::string emb = Join(dir, "text_emb");
  std::filesystem::create_directories(emb);
  ClusteredGenerator gen(32, 20, 4, 1.0f, 3);
  std::vector<float> parts[2] = {gen.Sample(1500), gen.Sample(1000)};
  ASSERT_TRUE(WriteNpyFloat16(Join(emb, "text_emb_0.npy"), {1500, 32}, parts[0]).ok());
  ASSERT_TRUE(WriteNpyFloat16(Join(emb, "text_emb_1.npy"), {1000, 32}, parts[1]).ok());

  IndexBuildOptions options;
  options.embeddings_folder = emb;
  options.file_prefix = "text_emb";
  options.index_path = Join(dir, "text.index");
  options.num_tuning_queries = 100;
  auto built = BuildIndex(options);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->infos.plan.kind, IndexKind::kFlat);
  EXPECT_EQ(built->infos.num_vectors, 2500);
  EXPECT_DOUBLE_EQ(built->infos.recall_at_k, 1.0);

  auto loaded = VectorIndex::Load(options.index_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE((*loaded)->memory_mapped());
  auto files = EmbeddingFiles::Open(emb, "text_emb");
  ASSERT_TRUE(files.ok());
  const std::vector<int64_t> ids = {0, 1499, 1500, 2499};
  std::vector<float> queries(ids.size() * 32);
  ASSERT_TRUE((*files)->ReadRowsById(ids, queries.data()).ok());
  auto result = (*loaded)->Search(queries, ids.size(), 1);
  ASSERT_TRUE(result.ok());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(result->ids[i], ids[i]);
}

TEST(BuildIndexTest, HnswIsTunedToTheRecallTarget) {
  const std::string dir = MakeTempDir("hnsw");
  const std::string emb = Join(dir, "img_emb");
  std::filesystem::create_directories(emb);
  ClusteredGenerator gen(32, 50, 4, 1.0f, 4);
  ASSERT_TRUE(WriteNpyFloat32(Join(emb, "img_emb_0.npy"), {12'000, 32}, gen.Sample(12'000)).ok());
  IndexBuildOptions options;
  options.embeddings_folder = emb;
  options.index_path = Join(dir, "image.index");
  options.max_index_memory_usage = int64_t{64} << 20;
  options.choice.flat_if_fits_threshold = 0;  // force a choice beyond Flat
  options.num_tuning_queries = 200;
  options.min_recall = 0.95;
  auto built = BuildIndex(options);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->infos.plan.kind, IndexKind::kHnsw) << built->infos.plan.factory;
  EXPECT_GT(built->infos.ef_search, 0);
  EXPECT_TRUE(built->infos.recall_target_met);
  EXPECT_GE(built->infos.recall_at_k, 0.95);
  auto loaded = VectorIndex::Load(options.index_path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->ef_search(), built->infos.ef_search);
}

TEST(BuildIndexTest, DimensionMismatchIsInvalidArgument) {
  const std::string dir = MakeTempDir("dims");
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_0.npy"), {3, 8}, std::vector<float>(24)).ok());
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_1.npy"), {3, 16}, std::vector<float>(48)).ok());
  IndexBuildOptions options;
  options.embeddings_folder = dir;
  options.index_path = Join(dir, "x.index");
  EXPECT_EQ(BuildIndex(options).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(options.index_path));
}

TEST(BuildIndexTest, MissingOrCorruptInput) {
  const std::string dir = MakeTempDir("missing");
  IndexBuildOptions options;
  options.embeddings_folder = Join(dir, "nope");
  options.index_path = Join(dir, "x.index");
  EXPECT_EQ(BuildIndex(options).status().code(), absl::StatusCode::kNotFound);
  options.embeddings_folder = dir;
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_0.npy"), {3, 8}, std::vector<float>(24)).ok());
  std::filesystem::resize_file(Join(dir, "img_emb_0.npy"), 100);
  EXPECT_EQ(BuildIndex(options).status().code(), absl::StatusCode::kDataLoss);
}

TEST(VectorIndexTest, LoadAndSearchErrors) {
  const std::string dir = MakeTempDir("vi");
  EXPECT_EQ(VectorIndex::Load(Join(dir, "none.index")).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "junk.index"), {2}, std::vector<float>(2)).ok());
  EXPECT_EQ(VectorIndex::Load(Join(dir, "junk.index")).status().code(),
            absl::StatusCode::kDataLoss);

  ClusteredGenerator gen(8, 2, 2, 1.0f, 5);
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_0.npy"), {100, 8}, gen.Sample(100)).ok());
  IndexBuildOptions options;
  options.embeddings_folder = dir;
  options.index_path = Join(dir, "small.index");
  auto built = BuildIndex(options);
  ASSERT_TRUE(built.ok()) << built.status();
  const std::vector<float> three(3);
  EXPECT_EQ(built->index->Search(three, 1, 5).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<float> one(8, 0.1f);
  EXPECT_EQ(built->index->Search(one, 1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  // More results asked for than vectors: the rest are -1.
  auto many = built->index->Search(one, 1, 150);
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(std::count(many->ids.begin(), many->ids.end(), -1), 50);
}

}  // namespace
}  // namespace index
}  // namespace oclip
