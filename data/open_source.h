// One entry point for jobs: opens the right SampleSource for a data argument
// the way OpenCLIP's `--dataset-type` does, so `oclip embed` and training
// treat every kind alike.
//
//   kAuto: an existing directory is an image folder; otherwise the
//          extension of the (last "::" part of the) spec decides: csv/tsv ->
//          CSV, tar (also .tar.gz/.tgz/...) -> webdataset; anything else is
//          INVALID_ARGUMENT (as OpenCLIP refuses to guess).
//   kWebDataset: `data` is a shard list (brace patterns, "::", `pipe:`).
//   kCsv: `data` is the CSV/TSV file.
//   kImageFolder: `data` is the root folder.
//
// Worker split: webdataset takes every num_workers-th shard
// (split_by_worker), CSV every num_workers-th row, image folders every
// num_workers-th file; fewer shards than workers leaves some workers idle.
//
// Errors: INVALID_ARGUMENT for an unknown type or bad options, and the
// chosen source's Create() errors. Thread-safe (no shared state).

#ifndef OCLIP_DATA_OPEN_SOURCE_H_
#define OCLIP_DATA_OPEN_SOURCE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "data/csv_source.h"
#include "data/image_folder.h"
#include "data/sample_source.h"
#include "data/webdataset.h"

namespace oclip {

enum class DatasetType { kAuto, kWebDataset, kCsv, kImageFolder };

// "auto", "webdataset", "csv", "imagefolder" (or "folder"), as the CLI
// spells them; INVALID_ARGUMENT otherwise.
absl::StatusOr<DatasetType> ParseDatasetType(absl::string_view name);

struct OpenSourceOptions {
  DatasetType type = DatasetType::kAuto;
  int worker_index = 0;
  int num_workers = 1;
  // Per kind; their path/root/worker fields are overwritten by OpenSampleSource.
  WebDatasetOptions webdataset;
  CsvOptions csv;
  ImageFolderOptions image_folder;
};

absl::StatusOr<std::unique_ptr<SampleSource>> OpenSampleSource(
    const std::string& data, const OpenSourceOptions& options = {});

}  // namespace oclip

#endif  // OCLIP_DATA_OPEN_SOURCE_H_
