#include "model/tokenizer/load_tokenizer.h"

#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/pretrained.h"
#include "model/tokenizer/clip_tokenizer.h"
#include "model/tokenizer/hf_bpe_tokenizer.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"

namespace oclip {
namespace {

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::Status Missing(const std::string& path, const std::string& needed) {
  return absl::NotFoundError(absl::StrCat("no tokenizer at ", path, ": this model needs ", needed));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const ModelConfig& config,
                                                         const std::string& path) {
  const int context_length = config.text.context_length;
  if (config.text.is_hf() && config.text.hf->model_type == "xlm-roberta") {
    const std::string model =
        IsDirectory(path) ? absl::StrCat(path, "/sentencepiece.bpe.model") : path;
    if (!IsFile(model)) return Missing(path, "sentencepiece.bpe.model");
    return SentencePieceTokenizer::FromModelFile(model, context_length);
  }
  const std::string vocab = absl::StrCat(path, "/vocab.json");
  const std::string merges = absl::StrCat(path, "/merges.txt");
  const bool hf_files = IsDirectory(path) && IsFile(vocab) && IsFile(merges);
  if (config.text.is_hf()) {
    if (!hf_files) return Missing(path, "a directory with vocab.json and merges.txt");
    return HfBpeTokenizer::FromFiles(vocab, merges, context_length);
  }
  if (IsDirectory(path)) {
    const std::string gz = absl::StrCat(path, "/", kClipBpeFileName);
    if (IsFile(gz)) return ClipTokenizer::FromBpeGzip(gz, context_length);
    if (hf_files) return ClipTokenizer::FromHfFiles(vocab, merges, context_length);
    return Missing(path, absl::StrCat(kClipBpeFileName, " or vocab.json + merges.txt"));
  }
  if (!IsFile(path)) return Missing(path, kClipBpeFileName);
  return ClipTokenizer::FromBpeGzip(path, context_length);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadOrFetchTokenizer(const ModelConfig& config,
                                                                const std::string& path) {
  if (!path.empty()) return LoadTokenizer(config, path);
  absl::StatusOr<std::string> fetched = FetchTokenizer(config.text.hf_tokenizer_name);
  if (!fetched.ok()) {
    return absl::Status(fetched.status().code(),
                        absl::StrCat("fetching the tokenizer (or give --tokenizer, or `tokenizer:` in server.yaml): ",
                                     fetched.status().message()));
  }
  return LoadTokenizer(config, *fetched);
}

}  // namespace oclip
