#include "index/metadata_store.h"

#include <sqlite3.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace oclip {
namespace index {
namespace {

absl::Status SqliteStatus(sqlite3* db, int rc, const std::string& what) {
  const std::string message =
      absl::StrCat(what, ": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(message);
    case SQLITE_CONSTRAINT:
      return absl::AlreadyExistsError(message);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(message);
    case SQLITE_CANTOPEN:
      return absl::NotFoundError(message);
    default:
      return absl::InternalError(message);
  }
}

std::string ColumnText(sqlite3_stmt* stmt, int col) {
  const unsigned char* text = sqlite3_column_text(stmt, col);
  return text == nullptr ? std::string()
                         : std::string(reinterpret_cast<const char*>(text),
                                       sqlite3_column_bytes(stmt, col));
}

// Resets a statement when the scope ends, whatever path leaves it.
struct ResetOnExit {
  sqlite3_stmt* stmt;
  ~ResetOnExit() {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetadataStore>> MetadataStore::Open(
    const std::string& path, const MetadataStoreOptions& options) {
  std::error_code ec;
  if (options.read_only && !std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such metadata database"));
  }
  sqlite3* db = nullptr;
  const int flags = (options.read_only ? SQLITE_OPEN_READONLY
                                       : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                    SQLITE_OPEN_FULLMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteStatus(db, rc, absl::StrCat("cannot open ", path));
    sqlite3_close(db);
    return status;
  }
  auto store = std::unique_ptr<MetadataStore>(new MetadataStore(db));
  {
    absl::MutexLock lock(&store->mu_);
    // Another writer (a build) may hold the lock briefly.
    sqlite3_busy_timeout(db, 5000);
    if (!options.read_only) {
      OCLIP_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
      OCLIP_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=NORMAL"));
      OCLIP_RETURN_IF_ERROR(store->Exec(
          "CREATE TABLE IF NOT EXISTS metadata (id INTEGER PRIMARY KEY, key TEXT, caption TEXT, "
          "url TEXT, partition INTEGER, row INTEGER, json TEXT)"));
    }
  }
  OCLIP_RETURN_IF_ERROR(store->Prepare());
  return store;
}

MetadataStore::~MetadataStore() {
  absl::MutexLock lock(&mu_);
  sqlite3_finalize(insert_);
  sqlite3_finalize(select_);
  sqlite3_finalize(count_);
  sqlite3_close(db_);
}

absl::Status MetadataStore::Exec(const char* sql) const {
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteStatus(nullptr, rc, absl::StrCat(sql, ": ",
                                                                 error ? error : ""));
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

absl::Status MetadataStore::Prepare() {
  absl::MutexLock lock(&mu_);
  struct {
    const char* sql;
    sqlite3_stmt** stmt;
  } statements[] = {
      {"INSERT INTO metadata (id, key, caption, url, partition, row, json) "
       "VALUES (?, ?, ?, ?, ?, ?, ?)",
       &insert_},
      {"SELECT id, key, caption, url, partition, row, json FROM metadata WHERE id = ?",
       &select_},
      {"SELECT COUNT(*) FROM metadata", &count_},
  };
  for (auto& s : statements) {
    const int rc = sqlite3_prepare_v2(db_, s.sql, -1, s.stmt, nullptr);
    // A read-only handle has no INSERT to prepare if the table is missing;
    // every failure here means the file is not our database.
    if (rc != SQLITE_OK) return SqliteStatus(db_, rc, absl::StrCat("preparing ", s.sql));
  }
  return absl::OkStatus();
}

absl::Status MetadataStore::Insert(absl::Span<const MetadataRecord> records) {
  absl::MutexLock lock(&mu_);
  OCLIP_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  for (const MetadataRecord& r : records) {
    ResetOnExit reset{insert_};
    sqlite3_bind_int64(insert_, 1, r.id);
    sqlite3_bind_text(insert_, 2, r.key.data(), static_cast<int>(r.key.size()), SQLITE_STATIC);
    sqlite3_bind_text(insert_, 3, r.caption.data(), static_cast<int>(r.caption.size()),
                      SQLITE_STATIC);
    sqlite3_bind_text(insert_, 4, r.url.data(), static_cast<int>(r.url.size()), SQLITE_STATIC);
    sqlite3_bind_int64(insert_, 5, r.partition);
    sqlite3_bind_int64(insert_, 6, r.row);
    sqlite3_bind_text(insert_, 7, r.json.data(), static_cast<int>(r.json.size()),
                      SQLITE_STATIC);
    const int rc = sqlite3_step(insert_);
    if (rc != SQLITE_DONE) {
      absl::Status status =
          SqliteStatus(db_, rc, absl::StrCat("inserting metadata for id ", r.id));
      Exec("ROLLBACK").IgnoreError();
      return status;
    }
  }
  absl::Status status = Exec("COMMIT");
  if (!status.ok()) Exec("ROLLBACK").IgnoreError();
  return status;
}

absl::StatusOr<std::vector<std::optional<MetadataRecord>>> MetadataStore::Lookup(
    absl::Span<const int64_t> ids) const {
  absl::MutexLock lock(&mu_);
  std::vector<std::optional<MetadataRecord>> out(ids.size());
  // One read transaction: a consistent snapshot and one lock, not one per id.
  OCLIP_RETURN_IF_ERROR(Exec("BEGIN"));
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) continue;
    ResetOnExit reset{select_};
    sqlite3_bind_int64(select_, 1, ids[i]);
    const int rc = sqlite3_step(select_);
    if (rc == SQLITE_DONE) continue;
    if (rc != SQLITE_ROW) {
      absl::Status status =
          SqliteStatus(db_, rc, absl::StrCat("looking up metadata for id ", ids[i]));
      Exec("ROLLBACK").IgnoreError();
      return status;
    }
    MetadataRecord r;
    r.id = sqlite3_column_int64(select_, 0);
    r.key = ColumnText(select_, 1);
    r.caption = ColumnText(select_, 2);
    r.url = ColumnText(select_, 3);
    r.partition = sqlite3_column_int64(select_, 4);
    r.row = sqlite3_column_int64(select_, 5);
    r.json = ColumnText(select_, 6);
    out[i] = std::move(r);
  }
  OCLIP_RETURN_IF_ERROR(Exec("COMMIT"));
  return out;
}

absl::StatusOr<int64_t> MetadataStore::Count() const {
  absl::MutexLock lock(&mu_);
  ResetOnExit reset{count_};
  const int rc = sqlite3_step(count_);
  if (rc != SQLITE_ROW) return SqliteStatus(db_, rc, "counting metadata");
  return sqlite3_column_int64(count_, 0);
}

}  // namespace index
}  // namespace oclip
