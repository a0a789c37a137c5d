// `oclip index build|search`: a FAISS index over the embeddings `oclip embed`
// wrote, with its metadata in SQLite, and queries against it.
//
//   oclip index build --embeddings OUT --index-folder IDX [--kind image|text]
//       [--max-index-memory-usage 4G] [--min-recall 0.9]
//     writes IDX/{image,text}.index, IDX/{image,text}.index_infos.json and
//     IDX/metadata.sqlite (vector id = row position across partitions).
//   oclip index search --index-folder IDX --model M --pretrained P
//       (--text S | --image F)... [--k 10] [--kind image|text]
//     prints one JSON line per query: the hits with id, score and metadata.

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "index/embedding_files.h"
#include "index/index_builder.h"
#include "index/index_folder.h"
#include "index/metadata_store.h"
#include "model/image/preprocess.h"

namespace oclip::cli {
namespace {

struct IndexFlags {
  ModelFlags model;
  std::string embeddings;
  std::string index_folder;
  std::string kind = "image";
  std::string max_index_memory_usage = "4G";
  double min_recall = 0.9;
  std::string min_recall_text = "0.9";
  std::vector<std::string> texts;
  std::vector<std::string> images;
  int64_t k = 10;
};

// "4G", "512M", "100000000": bytes (binary multiples, as autofaiss reads them).
absl::StatusOr<int64_t> ParseBytes(const std::string& text) {
  std::string digits = absl::AsciiStrToUpper(text);
  int64_t multiplier = 1;
  if (!digits.empty() && digits.back() == 'B') digits.pop_back();
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'K': multiplier = int64_t{1} << 10; break;
      case 'M': multiplier = int64_t{1} << 20; break;
      case 'G': multiplier = int64_t{1} << 30; break;
      case 'T': multiplier = int64_t{1} << 40; break;
      default: break;
    }
    if (multiplier != 1) digits.pop_back();
  }
  double value = 0;
  if (!absl::SimpleAtod(digits, &value) || value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-index-memory-usage '", text, "': expected e.g. 4G or 512M"));
  }
  return static_cast<int64_t>(value * static_cast<double>(multiplier));
}

// The embedding folder `oclip embed` writes for a kind of index.
absl::StatusOr<std::string> EmbeddingFolder(const std::string& kind) {
  if (kind == "image") return std::string("img_emb");
  if (kind == "text") return std::string("text_emb");
  return absl::InvalidArgumentError("--kind must be image or text");
}

// The metadata rows of every partition that has embeddings, in the
// embedding files' order, so that record i describes vector i.
absl::StatusOr<std::vector<index::MetadataRecord>> ReadMetadata(
    const std::string& embeddings, const index::EmbeddingFiles& files) {
  std::vector<index::MetadataRecord> records;
  for (const index::EmbeddingFiles::File& file : files.files()) {
    // ".../img_emb_{i}.npy" -> i
    const std::string name = file.path.substr(file.path.find_last_of('_') + 1);
    const std::string partition = name.substr(0, name.find('.'));
    const std::string path = absl::StrCat(embeddings, "/metadata/metadata_", partition, ".jsonl");
    OCLIP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
    int64_t row = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      nlohmann::json json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (json.is_discarded() || !json.is_object()) {
        return absl::DataLossError(absl::StrCat(path, ": line ", row + 1, " is not JSON"));
      }
      index::MetadataRecord record;
      record.id = static_cast<int64_t>(records.size());
      record.key = json.value("key", "");
      record.caption = json["caption"].is_string() ? json["caption"].get<std::string>() : "";
      record.url = json["url"].is_string() ? json["url"].get<std::string>() : "";
      record.partition = std::stoll(partition);
      record.row = row++;
      record.json = std::string(line);
      records.push_back(std::move(record));
    }
    if (file.first_row + file.header.rows != static_cast<int64_t>(records.size())) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " has ", row, " rows but ", file.path, " has ", file.header.rows, " vectors"));
    }
  }
  return records;
}

absl::Status Build(const IndexFlags& flags) {
  if (flags.embeddings.empty() || flags.index_folder.empty()) {
    return absl::InvalidArgumentError("--embeddings and --index-folder are required");
  }
  OCLIP_ASSIGN_OR_RETURN(const std::string embedding_folder, EmbeddingFolder(flags.kind));
  OCLIP_ASSIGN_OR_RETURN(const index::IndexFolderPaths paths,
                         index::PathsInIndexFolder(flags.index_folder, flags.kind));
  index::IndexBuildOptions options;
  options.embeddings_folder = absl::StrCat(flags.embeddings, "/", embedding_folder);
  options.file_prefix = embedding_folder;
  options.index_path = paths.index;
  options.index_infos_path = paths.index_infos;
  OCLIP_ASSIGN_OR_RETURN(options.max_index_memory_usage, ParseBytes(flags.max_index_memory_usage));
  if (!absl::SimpleAtod(flags.min_recall_text, &options.min_recall) || options.min_recall <= 0 ||
      options.min_recall > 1) {
    return absl::InvalidArgumentError("--min-recall must be in (0, 1]");
  }
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<index::EmbeddingFiles> files,
                         index::EmbeddingFiles::Open(options.embeddings_folder, embedding_folder));
  // Metadata first: a mismatch is found before minutes of index building.
  OCLIP_ASSIGN_OR_RETURN(std::vector<index::MetadataRecord> records,
                         ReadMetadata(flags.embeddings, *files));
  if (::mkdir(flags.index_folder.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoToStatus(errno, absl::StrCat("cannot create ", flags.index_folder));
  }
  OCLIP_ASSIGN_OR_RETURN(index::BuiltIndex built, index::BuildIndex(options));
  std::remove(paths.metadata.c_str());
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<index::MetadataStore> store,
                         index::MetadataStore::Open(paths.metadata));
  OCLIP_RETURN_IF_ERROR(store->Insert(records));
  std::cout << index::IndexInfosToJson(built.infos) << "\n";
  return absl::OkStatus();
}

absl::Status Search(const IndexFlags& flags) {
  if (flags.index_folder.empty()) return absl::InvalidArgumentError("--index-folder is required");
  if (flags.texts.empty() == flags.images.empty()) {
    return absl::InvalidArgumentError("give --text or --image queries (one kind per call)");
  }
  if (flags.k < 1) return absl::InvalidArgumentError("--k must be >= 1");
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<index::IndexFolder> folder,
                         index::IndexFolder::Open(flags.index_folder, flags.kind));
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, flags.model.LoadModel());
  torch::InferenceMode inference;
  torch::Tensor queries;
  const std::vector<std::string>& inputs = flags.texts.empty() ? flags.images : flags.texts;
  if (!flags.texts.empty()) {
    OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                           flags.model.LoadTokenizer(model->config()));
    std::vector<int64_t> ids = tokenizer->Tokenize(flags.texts);
    torch::Tensor tokens = torch::from_blob(ids.data(),
                                            {static_cast<int64_t>(flags.texts.size()),
                                             tokenizer->context_length()},
                                            torch::kLong)
                               .clone();
    OCLIP_ASSIGN_OR_RETURN(queries, model->EncodeText(tokens, /*normalize=*/true));
  } else {
    const PreprocessOptions preprocess = flags.model.Preprocessing(model->config());
    const int64_t s = preprocess.image_size;
    torch::Tensor batch = torch::empty({static_cast<int64_t>(flags.images.size()), 3, s, s});
    for (size_t i = 0; i < flags.images.size(); ++i) {
      OCLIP_RETURN_IF_ERROR(PreprocessImageFile(flags.images[i], preprocess,
                                                batch[static_cast<int64_t>(i)].data_ptr<float>()));
    }
    OCLIP_ASSIGN_OR_RETURN(queries, model->EncodeImage(batch, /*normalize=*/true));
  }
  queries = queries.to(torch::kCPU, torch::kFloat).contiguous();
  const int64_t n = queries.size(0);
  OCLIP_ASSIGN_OR_RETURN(std::vector<std::vector<index::SearchHit>> hits,
                         folder->Search(absl::MakeConstSpan(queries.data_ptr<float>(),
                                                            queries.numel()),
                                        n, static_cast<int>(flags.k)));
  for (int64_t q = 0; q < n; ++q) {
    nlohmann::json answer = nlohmann::json::array();
    for (const index::SearchHit& hit : hits[q]) {
      nlohmann::json entry = {{"id", hit.id}, {"score", hit.score}};
      if (hit.metadata.has_value()) {
        entry["key"] = hit.metadata->key;
        entry["caption"] = hit.metadata->caption;
        entry["url"] = hit.metadata->url;
      }
      answer.push_back(std::move(entry));
    }
    std::cout << nlohmann::json{{"query", inputs[q]}, {"hits", answer}}.dump() << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunIndex(int argc, char** argv) {
  const std::string action = argc > 0 ? argv[0] : "";
  if (action != "build" && action != "search") {
    std::cerr << "usage: oclip index build|search [flags] (see oclip index ACTION --help)\n";
    return 2;
  }
  IndexFlags values;
  FlagSet flags("index " + action,
                action == "build"
                    ? "Builds a FAISS index (chosen like autofaiss, tuned to --min-recall) over\n"
                      "the embeddings of `oclip embed`, and its SQLite metadata store."
                    : "Searches an index built by `oclip index build` with text or image\n"
                      "queries; one JSON line per query.");
  flags.AddString("index-folder", &values.index_folder, "the index folder");
  flags.AddString("kind", &values.kind, "image (default) or text embeddings");
  if (action == "build") {
    flags.AddString("embeddings", &values.embeddings, "the --output-folder of `oclip embed`");
    flags.AddString("max-index-memory-usage", &values.max_index_memory_usage,
                    "memory budget of the index (4G)");
    flags.AddString("min-recall", &values.min_recall_text,
                    "1-recall@10 to reach against exact search (0.9)");
  } else {
    values.model.Register(flags);
    flags.AddRepeated("text", &values.texts, "text query");
    flags.AddRepeated("image", &values.images, "image query");
    flags.AddInt("k", &values.k, "hits per query (10)");
  }
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc - 1, argv + 1)) return *exit_code;
  absl::Status status = action == "build" ? Build(values) : Search(values);
  if (!status.ok()) {
    std::cerr << "oclip index " << action << ": " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
