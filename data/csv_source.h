// Samples listed in a CSV/TSV file, as OpenCLIP's CsvDataset reads them
// (`--csv-img-key`, `--csv-caption-key`, `--csv-separator`): a header row
// names the columns; each data row gives an image path and a caption.
//
// Parsing follows RFC 4180 (as pandas does with its default quoting, for any
// separator): a field may be quoted with '"', a doubled "" inside quotes is
// one quote, and quoted fields may hold separators and newlines. CRLF and LF
// line ends, a leading UTF-8 BOM, and blank lines (skipped) are accepted.
// The file is read streaming (a `pipe:` command works too).
//
// Relative image paths are resolved against `image_root`, by default the
// CSV file's directory (OpenCLIP opens them relative to the working
// directory; a CSV that travels with its images is the common case, and an
// absolute path is unaffected either way).
//
// Failures (counted, the row skipped): malformed_row for a row whose field
// count differs from the header's or whose quote never closes (that ends the
// file); missing_file / unreadable_file when the image cannot be read.
//
// Create() errors: those of ByteSource::Open (NOT_FOUND, ...), and
// INVALID_ARGUMENT for an empty file or a header lacking one of the columns
// (the message lists the columns present) or bad options.
//
// Thread safety: one thread at a time.

#ifndef OCLIP_DATA_CSV_SOURCE_H_
#define OCLIP_DATA_CSV_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/byte_source.h"
#include "data/local_file.h"
#include "data/sample_source.h"

namespace oclip {

struct CsvOptions {
  std::string path;                    // The CSV/TSV file (or a `pipe:` spec).
  std::string image_key = "filepath";  // --csv-img-key
  std::string caption_key = "title";   // --csv-caption-key
  char separator = '\t';               // --csv-separator
  // Base of relative image paths; "" = the CSV file's directory.
  std::string image_root;
  // false: samples carry image_path only and the consumer reads the file
  // (then missing files are not detected here).
  bool read_images = true;
  // Rows this worker takes: data rows r with r % num_workers == worker_index.
  int worker_index = 0;
  int num_workers = 1;
  // A record longer than this (an unclosed quote swallowing the file) ends
  // the file as a malformed row instead of exhausting memory.
  size_t max_record_bytes = size_t{1} << 20;
};

class CsvSource : public SampleSource {
 public:
  static absl::StatusOr<std::unique_ptr<CsvSource>> Create(CsvOptions options);

  absl::StatusOr<bool> Next(Sample* sample) override;
  const SourceStats& stats() const override { return stats_; }

  // The header's column names, in order.
  const std::vector<std::string>& columns() const { return columns_; }

 private:
  explicit CsvSource(CsvOptions options);

  enum class RecordResult { kRecord, kEnd, kMalformed };
  // Reads the next non-blank record into `fields_`. kMalformed (an unclosed
  // quote, an over-long record) sets `malformed_` and ends the file; an error
  // status is the byte source's.
  absl::StatusOr<RecordResult> ReadRecord();
  absl::StatusOr<bool> ReadChar(char* c);
  void CountFailure(FailureKind kind);
  void Finish();

  const CsvOptions options_;
  std::string image_root_;
  std::unique_ptr<ByteSource> source_;
  std::vector<char> buffer_;
  size_t buffer_pos_ = 0, buffer_end_ = 0;
  int64_t line_ = 1;  // Current line of the file, for messages.
  std::vector<std::string> fields_;
  std::string malformed_;
  std::vector<std::string> columns_;
  size_t image_column_ = 0, caption_column_ = 0;
  int64_t row_ = 0;  // Data rows read so far.
  bool done_ = false;
  ShardStats shard_;
  SourceStats stats_;
  WarningLimiter warnings_;
};

}  // namespace oclip

#endif  // OCLIP_DATA_CSV_SOURCE_H_
