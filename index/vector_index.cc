#include "index/vector_index.h"

#include <faiss/IVFlib.h>
#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>

#include <exception>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "index/index_builder.h"

namespace oclip {
namespace index {
namespace {

faiss::IndexHNSW* FindHnsw(faiss::Index* index) {
  if (auto* pre = dynamic_cast<faiss::IndexPreTransform*>(index)) return FindHnsw(pre->index);
  return dynamic_cast<faiss::IndexHNSW*>(index);
}

std::string DefaultInfosPath(const std::string& index_path) {
  return (std::filesystem::path(index_path).parent_path() / "index_infos.json").string();
}

}  // namespace

VectorIndex::VectorIndex(std::unique_ptr<faiss::Index> index, bool memory_mapped)
    : index_(std::move(index)), memory_mapped_(memory_mapped) {}

VectorIndex::~VectorIndex() = default;

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::Load(
    const std::string& index_path, const VectorIndexOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(index_path, ec)) {
    return absl::NotFoundError(absl::StrCat(index_path, ": no such index file"));
  }
  int nprobe = 0;
  int ef_search = 0;
  const std::string infos_path =
      options.index_infos_path.empty() ? DefaultInfosPath(index_path) : options.index_infos_path;
  if (std::filesystem::exists(infos_path, ec)) {
    OCLIP_ASSIGN_OR_RETURN(std::string json, ReadFileToString(infos_path));
    OCLIP_ASSIGN_OR_RETURN(IndexInfos infos, IndexInfosFromJson(json));
    nprobe = infos.nprobe;
    ef_search = infos.ef_search;
  }
  if (options.nprobe > 0) nprobe = options.nprobe;
  if (options.ef_search > 0) ef_search = options.ef_search;

  std::unique_ptr<faiss::Index> index;
  bool mapped = false;
  if (options.memory_map) {
    // FAISS maps only the inverted lists of IVF indexes and throws for the
    // rest, so a failed mapped read falls back to a plain one below.
    try {
      index.reset(faiss::read_index(index_path.c_str(), faiss::IO_FLAG_MMAP));
      mapped = faiss::ivflib::try_extract_index_ivf(index.get()) != nullptr;
    } catch (const std::exception&) {
      index.reset();
    }
  }
  if (index == nullptr) {
    try {
      index.reset(faiss::read_index(index_path.c_str()));
    } catch (const std::exception& e) {
      return absl::DataLossError(
          absl::StrCat(index_path, ": not a FAISS index FAISS can read: ", e.what()));
    }
  }
  auto out = std::unique_ptr<VectorIndex>(new VectorIndex(std::move(index), mapped));
  OCLIP_RETURN_IF_ERROR(out->ApplySearchParameters(nprobe, ef_search));
  return out;
}

absl::StatusOr<std::unique_ptr<VectorIndex>> VectorIndex::FromFaiss(
    std::unique_ptr<faiss::Index> index, int nprobe, int ef_search) {
  if (index == nullptr) return absl::InvalidArgumentError("null FAISS index");
  auto out = std::unique_ptr<VectorIndex>(new VectorIndex(std::move(index), false));
  OCLIP_RETURN_IF_ERROR(out->ApplySearchParameters(nprobe, ef_search));
  return out;
}

absl::Status VectorIndex::ApplySearchParameters(int nprobe, int ef_search) {
  if (nprobe < 0 || ef_search < 0) {
    return absl::InvalidArgumentError("nprobe and efSearch must be >= 0");
  }
  if (faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index_.get())) {
    if (nprobe > 0) ivf->nprobe = std::min<size_t>(nprobe, ivf->nlist);
    nprobe_ = static_cast<int>(ivf->nprobe);
  }
  if (faiss::IndexHNSW* hnsw = FindHnsw(index_.get())) {
    if (ef_search > 0) hnsw->hnsw.efSearch = ef_search;
    ef_search_ = hnsw->hnsw.efSearch;
  }
  return absl::OkStatus();
}

int VectorIndex::dim() const { return index_->d; }
int64_t VectorIndex::size() const { return index_->ntotal; }

absl::StatusOr<SearchResult> VectorIndex::Search(absl::Span<const float> queries,
                                                 int64_t num_queries, int k) const {
  if (k < 1) return absl::InvalidArgumentError(absl::StrCat("k must be >= 1, got ", k));
  if (num_queries < 0 ||
      static_cast<int64_t>(queries.size()) != num_queries * static_cast<int64_t>(index_->d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("queries hold ", queries.size(), " floats, expected ", num_queries,
                     " x ", index_->d));
  }
  SearchResult result;
  result.num_queries = num_queries;
  result.k = k;
  result.ids.assign(num_queries * k, -1);
  result.scores.assign(num_queries * k, 0.0f);
  if (num_queries == 0) return result;
  std::vector<faiss::Index::idx_t> labels(num_queries * k);
  try {
    index_->search(num_queries, queries.data(), k, result.scores.data(), labels.data());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("FAISS search failed: ", e.what()));
  }
  for (size_t i = 0; i < labels.size(); ++i) result.ids[i] = labels[i];
  return result;
}

}  // namespace index
}  // namespace oclip
