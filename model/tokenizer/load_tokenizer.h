// Picks and loads the tokenizer a model's text tower was trained with, from
// files on disk:
//   - native text towers: CLIP's BPE, from `bpe_simple_vocab_16e6.txt.gz`, or
//     from an HF tokenizer directory (vocab.json + merges.txt), or from a
//     directory holding either;
//   - roberta towers: a directory with vocab.json + merges.txt;
//   - xlm-roberta towers: `sentencepiece.bpe.model`, or a directory holding it.
// Rows are cut/padded to the text tower's context length (77).
//
// Errors: NOT_FOUND when the files are absent (the message says which files
// this model needs), or the tokenizer's own errors for malformed files.

#ifndef OCLIP_MODEL_TOKENIZER_LOAD_TOKENIZER_H_
#define OCLIP_MODEL_TOKENIZER_LOAD_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/tokenizer/tokenizer.h"

namespace oclip {

// The file name of CLIP's BPE vocabulary, as OpenCLIP ships it.
inline constexpr char kClipBpeFileName[] = "bpe_simple_vocab_16e6.txt.gz";

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const ModelConfig& config,
                                                         const std::string& path);

// LoadTokenizer(config, path) for a non-empty `path`; otherwise the text
// tower's files from the HF hub, downloaded once into the cache
// (model/pretrained.h). Errors say to pass a tokenizer path when the download
// fails.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadOrFetchTokenizer(const ModelConfig& config,
                                                                const std::string& path);

}  // namespace oclip

#endif  // OCLIP_MODEL_TOKENIZER_LOAD_TOKENIZER_H_
