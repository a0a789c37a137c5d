#include "data/open_source.h"

#include <sys/stat.h>

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "data/shard_list.h"

namespace oclip {
namespace {

absl::StatusOr<DatasetType> GuessType(const std::string& data) {
  struct stat st;
  if (::stat(data.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return DatasetType::kImageFolder;
  absl::string_view last = data;
  const size_t sep = last.rfind("::");
  if (sep != absl::string_view::npos) last = last.substr(sep + 2);
  const std::string lower = absl::AsciiStrToLower(last);
  for (absl::string_view suffix : {".csv", ".tsv"}) {
    if (absl::EndsWith(lower, suffix)) return DatasetType::kCsv;
  }
  for (absl::string_view suffix : {".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2"}) {
    if (absl::EndsWith(lower, suffix)) return DatasetType::kWebDataset;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "cannot tell the dataset type of \"", data,
      "\" (not a folder, and not ending in .tar, .csv or .tsv); set the type explicitly"));
}

}  // namespace

absl::StatusOr<DatasetType> ParseDatasetType(absl::string_view name) {
  if (name == "auto") return DatasetType::kAuto;
  if (name == "webdataset") return DatasetType::kWebDataset;
  if (name == "csv") return DatasetType::kCsv;
  if (name == "imagefolder" || name == "folder") return DatasetType::kImageFolder;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dataset type \"", name, "\" (auto, webdataset, csv, imagefolder)"));
}

absl::StatusOr<std::unique_ptr<SampleSource>> OpenSampleSource(const std::string& data,
                                                               const OpenSourceOptions& options) {
  DatasetType type = options.type;
  if (type == DatasetType::kAuto) {
    OCLIP_ASSIGN_OR_RETURN(type, GuessType(data));
  }
  switch (type) {
    case DatasetType::kWebDataset: {
      OCLIP_ASSIGN_OR_RETURN(std::vector<std::string> shards, ExpandShardList(data));
      WebDatasetSource::Options wds;
      OCLIP_ASSIGN_OR_RETURN(wds.shards,
                             ShardsForWorker(shards, options.worker_index, options.num_workers));
      wds.reader = options.webdataset;
      OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<WebDatasetSource> source,
                             WebDatasetSource::Create(std::move(wds)));
      return std::unique_ptr<SampleSource>(std::move(source));
    }
    case DatasetType::kCsv: {
      CsvOptions csv = options.csv;
      csv.path = data;
      csv.worker_index = options.worker_index;
      csv.num_workers = options.num_workers;
      OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<CsvSource> source, CsvSource::Create(std::move(csv)));
      return std::unique_ptr<SampleSource>(std::move(source));
    }
    case DatasetType::kImageFolder: {
      ImageFolderOptions folder = options.image_folder;
      folder.root = data;
      folder.worker_index = options.worker_index;
      folder.num_workers = options.num_workers;
      OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<ImageFolderSource> source,
                             ImageFolderSource::Create(std::move(folder)));
      return std::unique_ptr<SampleSource>(std::move(source));
    }
    case DatasetType::kAuto:
      break;
  }
  return absl::InternalError("unhandled dataset type");
}

}  // namespace oclip
