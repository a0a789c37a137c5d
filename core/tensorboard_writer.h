// TensorBoard event files, written and read without TensorFlow or a protobuf
// library: training logs scalars (loss, learning rate, logit scale,
// throughput, eval metrics) that `tensorboard --logdir` shows.
//
// File format (TFRecord): each record is
//   uint64 length (little endian) | uint32 masked CRC-32C of those 8 bytes |
//   `length` bytes of data       | uint32 masked CRC-32C of the data
// and each record's data is a serialized tensorflow.Event. Only the fields a
// scalar log needs are encoded, by hand:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
//             Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record is an Event with file_version "brain.Event:2", as
// TensorFlow writes it.
//
// TensorBoardWriter owns one file, events.out.tfevents.<unix secs>.<host>.
// <pid>.<n> in the log folder (created if missing); <n> counts the writers
// this process opened, so that two writers never share a file. Records are
// buffered; Flush() (and destruction) pushes them to the file. Thread-safe:
// calls are serialized on a mutex.
//
// ReadTensorBoardScalars parses such a file back (any TFRecord event file
// whose scalars are simple_value summaries), checking both CRCs of every
// record: DATA_LOSS for a mismatch, a truncated record or a malformed Event;
// NOT_FOUND for a missing file.

#ifndef OCLIP_CORE_TENSORBOARD_WRITER_H_
#define OCLIP_CORE_TENSORBOARD_WRITER_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace oclip {

class TensorBoardWriter {
 public:
  // Creates `log_dir` (and its parents) if missing and a new event file in
  // it holding the file_version record. Errors as the file system reports
  // them (e.g. PERMISSION_DENIED).
  static absl::StatusOr<std::unique_ptr<TensorBoardWriter>> Open(const std::string& log_dir);

  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;
  ~TensorBoardWriter();  // Flushes; errors are lost (call Flush() to see them).

  // One Event at the current wall time with one simple_value (a float, as
  // TensorBoard stores scalars). INVALID_ARGUMENT for an empty tag.
  absl::Status AddScalar(const std::string& tag, double value, int64_t step);

  // Hands the buffered records to the operating system.
  absl::Status Flush();

  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}

  absl::Status WriteRecord(absl::string_view data) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_);
};

struct ScalarEvent {
  std::string tag;
  double value;  // The stored float, widened.
  int64_t step;
  double wall_time;
};

// Every simple_value of every Event in the file, in file order.
absl::StatusOr<std::vector<ScalarEvent>> ReadTensorBoardScalars(const std::string& path);

// The event file's record framing, exposed for tests and other record files:
// `data` framed as one record.
std::string FrameTfRecord(absl::string_view data);

}  // namespace oclip

#endif  // OCLIP_CORE_TENSORBOARD_WRITER_H_
