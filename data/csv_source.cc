#include "data/csv_source.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/logging.h"
#include "core/status.h"

namespace oclip {

CsvSource::CsvSource(CsvOptions options) : options_(std::move(options)) {
  shard_.shard = options_.path;
  image_root_ = options_.image_root.empty() && !absl::StartsWith(options_.path, kPipePrefix)
                    ? DirName(options_.path)
                    : options_.image_root;
}

absl::StatusOr<std::unique_ptr<CsvSource>> CsvSource::Create(CsvOptions options) {
  if (options.num_workers <= 0 || options.worker_index < 0 ||
      options.worker_index >= options.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat("csv: worker index ", options.worker_index,
                                                   " is not in [0, ", options.num_workers, ")"));
  }
  if (options.separator == '"' || options.separator == '\n' || options.separator == '\r') {
    return absl::InvalidArgumentError("csv: the separator cannot be a quote or a line break");
  }
  if (options.image_key.empty() || options.caption_key.empty()) {
    return absl::InvalidArgumentError("csv: image and caption column names must be set");
  }
  std::unique_ptr<CsvSource> source(new CsvSource(std::move(options)));
  const CsvOptions& opts = source->options_;
  OCLIP_ASSIGN_OR_RETURN(source->source_, ByteSource::Open(opts.path));
  source->buffer_.resize(size_t{1} << 16);

  OCLIP_ASSIGN_OR_RETURN(RecordResult header, source->ReadRecord());
  if (header != RecordResult::kRecord) {
    return absl::InvalidArgumentError(absl::StrCat("csv ", opts.path, ": no header row"));
  }
  source->columns_ = source->fields_;
  // pandas drops a UTF-8 byte-order mark in front of the first column name.
  if (absl::StartsWith(source->columns_[0], "\xEF\xBB\xBF")) source->columns_[0].erase(0, 3);
  auto find = [&](const std::string& name, size_t* index) {
    for (size_t i = 0; i < source->columns_.size(); ++i) {
      if (source->columns_[i] == name) {
        *index = i;
        return true;
      }
    }
    return false;
  };
  for (const auto& [name, index, flag] :
       {std::make_tuple(opts.image_key, &source->image_column_, "--csv-img-key"),
        std::make_tuple(opts.caption_key, &source->caption_column_, "--csv-caption-key")}) {
    if (!find(name, index)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "csv ", opts.path, ": no column \"", name, "\" (", flag, "); columns are \"",
          absl::StrJoin(source->columns_, "\", \""), "\" split on ",
          opts.separator == '\t' ? std::string("tab")
                                 : absl::StrCat("'", std::string(1, opts.separator), "'")));
    }
  }
  return source;
}

void CsvSource::CountFailure(FailureKind kind) {
  shard_.AddFailure(kind);
  stats_.AddFailure(kind);
}

void CsvSource::Finish() {
  if (done_) return;
  done_ = true;
  if (source_ != nullptr) source_->Close().IgnoreError();
  stats_.AddShard(shard_);
}

absl::StatusOr<CsvSource::RecordResult> CsvSource::ReadRecord() {
  fields_.clear();
  std::string field;
  bool in_quotes = false;
  bool quoted_field = false;
  bool any = false;  // Whether this record has a character (blank lines have none).
  size_t record_bytes = 0;
  const char sep = options_.separator;
  while (true) {
    if (buffer_pos_ == buffer_end_) {
      absl::StatusOr<size_t> n = source_->Read(buffer_.data(), buffer_.size());
      if (!n.ok()) return n.status();
      buffer_pos_ = 0;
      buffer_end_ = *n;
      if (*n == 0) {
        if (in_quotes) {
          malformed_ = absl::StrCat("a quote opened before line ", line_, " is never closed");
          return RecordResult::kMalformed;
        }
        if (!any) return RecordResult::kEnd;
        fields_.push_back(std::move(field));
        return RecordResult::kRecord;
      }
    }
    const char c = buffer_[buffer_pos_++];
    if (++record_bytes > options_.max_record_bytes) {
      malformed_ = absl::StrCat("the record at line ", line_, " is longer than ",
                                options_.max_record_bytes, " bytes (an unclosed quote?)");
      return RecordResult::kMalformed;
    }
    if (c == '\n') ++line_;
    if (in_quotes) {
      if (c == '"') {
        // A doubled quote is a literal one; peek without losing a buffer edge.
        if (buffer_pos_ == buffer_end_) {
          absl::StatusOr<size_t> n = source_->Read(buffer_.data(), buffer_.size());
          if (!n.ok()) return n.status();
          buffer_pos_ = 0;
          buffer_end_ = *n;
        }
        if (buffer_pos_ < buffer_end_ && buffer_[buffer_pos_] == '"') {
          field += '"';
          ++buffer_pos_;
        } else {
          in_quotes = false;
        }
      } else {
        field += c;
      }
      continue;
    }
    if (c == '\n') {
      if (!any) {
        record_bytes = 0;
        continue;  // Blank line.
      }
      // CRLF: the CR belongs to the line end, unless it was quoted.
      if (!quoted_field && !field.empty() && field.back() == '\r') field.pop_back();
      fields_.push_back(std::move(field));
      return RecordResult::kRecord;
    }
    if (c == '\r' && !any) continue;  // A CRLF blank line.
    any = true;
    if (c == sep) {
      fields_.push_back(std::move(field));
      field.clear();
      quoted_field = false;
    } else if (c == '"' && field.empty() && !quoted_field) {
      in_quotes = quoted_field = true;
    } else {
      // Characters after a closing quote are kept, as Python's csv does.
      field += c;
    }
  }
}

absl::StatusOr<bool> CsvSource::Next(Sample* sample) {
  while (!done_) {
    const int64_t line = line_;
    absl::StatusOr<RecordResult> record = ReadRecord();
    if (!record.ok() || *record == RecordResult::kMalformed) {
      // The file cannot be followed past this point; the rows before it have
      // been delivered.
      FailureKind kind = FailureKind::kMalformedRow;
      absl::Status status =
          absl::DataLossError(absl::StrCat("csv ", options_.path, ": ", malformed_));
      if (!record.ok()) {
        status = record.status();
        kind = absl::IsUnavailable(status) ? FailureKind::kCommandFailed
                                           : FailureKind::kUnreadableFile;
      }
      CountFailure(kind);
      shard_.status = status;
      LogWarning(absl::StrCat("csv: stopping at line ", line, ": ", status.ToString()));
      Finish();
      return false;
    }
    if (*record == RecordResult::kEnd) {
      Finish();
      return false;
    }
    const int64_t row = row_++;
    if (row % options_.num_workers != options_.worker_index) continue;
    if (fields_.size() != columns_.size()) {
      CountFailure(FailureKind::kMalformedRow);
      warnings_.Warn(absl::StrCat("csv ", options_.path, " line ", line, ": ", fields_.size(),
                                  " fields, the header has ", columns_.size()));
      continue;
    }
    sample->Clear();
    sample->key = fields_[image_column_];
    sample->image_path = JoinPath(image_root_, fields_[image_column_]);
    sample->image_extension = LowerExtension(sample->image_path);
    sample->caption = std::move(fields_[caption_column_]);
    sample->has_caption = true;
    sample->shard = options_.path;
    sample->index_in_shard = row;
    if (options_.read_images) {
      absl::Status status = sample->key.empty() ? absl::NotFoundError("empty image path")
                                                : ReadLocalFile(sample->image_path, &sample->image);
      if (!status.ok()) {
        CountFailure(FailureKindForFileError(status));
        warnings_.Warn(absl::StrCat("csv ", options_.path, " line ", line, ": ", status.message()));
        continue;
      }
    }
    ++shard_.samples;
    ++stats_.samples;
    return true;
  }
  return false;
}

}  // namespace oclip
