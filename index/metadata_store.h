// SQLite store of what each vector id stands for: the sample key, caption,
// url, and where the embedding came from (partition = the i of
// img_emb_{i}.npy, row within it), plus the sample's raw metadata JSON text.
// The retrieval path joins search results to it: Lookup(ids) returns the
// records in the order of the ids.
//
// One table, `metadata(id INTEGER PRIMARY KEY, key, caption, url, partition,
// row, json)`, in WAL mode so that readers in other processes (a server) are
// not blocked by a writer (a build). Inserts run in one transaction per call
// through one prepared statement; lookups reuse one prepared statement per id
// inside one read transaction — B-tree lookups on the primary key, which for
// the k·q ids of a search is as fast as an `IN (...)` list and needs no SQL
// built from data.
//
// Errors (the SQLite message is kept): NOT_FOUND (read-only open of a missing
// file), DATA_LOSS (not a database, or corrupt), ALREADY_EXISTS (an id is
// inserted twice; the whole call is rolled back), UNAVAILABLE (database
// locked by another writer), INTERNAL otherwise. Unknown ids are not errors:
// their slot in Lookup's result is empty.
//
// Thread safety: all methods may be called concurrently; a mutex serialises
// use of the one connection. Strings are stored as UTF-8 bytes unchanged.

#ifndef OCLIP_INDEX_METADATA_STORE_H_
#define OCLIP_INDEX_METADATA_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

struct sqlite3;
struct sqlite3_stmt;

namespace oclip {
namespace index {

struct MetadataRecord {
  int64_t id = 0;  // the vector id in the index
  std::string key;
  std::string caption;
  std::string url;
  int64_t partition = 0;
  int64_t row = 0;
  std::string json;  // raw metadata, as the embedding job wrote it

  bool operator==(const MetadataRecord& o) const {
    return id == o.id && key == o.key && caption == o.caption && url == o.url &&
           partition == o.partition && row == o.row && json == o.json;
  }
};

struct MetadataStoreOptions {
  // Read-only: the file must exist and nothing is created or written.
  bool read_only = false;
};

class MetadataStore {
 public:
  static absl::StatusOr<std::unique_ptr<MetadataStore>> Open(
      const std::string& path, const MetadataStoreOptions& options = {});

  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;
  ~MetadataStore();

  // All or nothing: one transaction.
  absl::Status Insert(absl::Span<const MetadataRecord> records);

  // result[i] is the record of ids[i], or empty if there is none (including
  // the -1 FAISS returns for missing results).
  absl::StatusOr<std::vector<std::optional<MetadataRecord>>> Lookup(
      absl::Span<const int64_t> ids) const;

  absl::StatusOr<int64_t> Count() const;

 private:
  explicit MetadataStore(sqlite3* db) : db_(db) {}
  absl::Status Prepare();
  absl::Status Exec(const char* sql) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  sqlite3* db_;
  sqlite3_stmt* insert_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* select_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* count_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace index
}  // namespace oclip

#endif  // OCLIP_INDEX_METADATA_STORE_H_
