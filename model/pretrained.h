// The registry of released CLIP checkpoints (OpenCLIP v2.23.0's `pretrained.py`
// for the seed models), and fetching them into the local cache.
//
// Each (model config, tag) pair names one checkpoint: where it is downloaded
// from (an OpenAI / GitHub release URL, or a Hugging Face hub repository), its
// file format, its SHA-256 where the source publishes one (the full hash in
// OpenAI URLs, an 8-hex prefix in OpenCLIP's v0.2-weights file names; none for
// the HF hub), the image normalization it was trained with, and whether it was
// trained with QuickGELU. The last matters because OpenCLIP lists some
// QuickGELU-trained weights (all `openai` ones, `yfcc15m`/`cc12m` ResNets,
// ViT-B-32 `laion400m_e31/e32`) under configs that build nn.GELU, which
// silently costs accuracy; QuickGeluMismatch() tells callers when to warn or
// force QuickGELU.
//
// Tags are normalized as OpenCLIP does (lower case, '-' -> '_'); a '/' in a
// model name reads as '-'. The registry is an explicit table; lookups are pure
// and thread-safe.
//
// FetchPretrained() downloads a checkpoint with core/download.h into the cache
// (CacheDir(), or FetchOptions::cache_dir):
//   <cache>/checkpoints/<URL file name>           OpenAI / GitHub files
//   <cache>/hf/<org>/<repo>/<revision>/<file>      HF hub files
// so entries that share a source (RN50 and RN50-quickgelu `openai`) share one
// file. A cached file is reused (after re-verifying its SHA-256 where known);
// an interrupted download resumes. FetchPretrained() may run concurrently for
// different entries; concurrent fetches of the same file are serialized by
// the downloader's lock (the loser gets UNAVAILABLE).
//
// Errors: NOT_FOUND for an unknown model or tag (the message lists what
// exists) and for a file missing on the server; the download errors of
// core/download.h otherwise (UNAVAILABLE offline, DATA_LOSS on a checksum
// mismatch, ...).

#ifndef OCLIP_MODEL_PRETRAINED_H_
#define OCLIP_MODEL_PRETRAINED_H_

#include <array>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/download.h"

namespace oclip {

// The file format of a registry entry's download (mirrors CheckpointFormat of
// model/checkpoint/checkpoint.h, which needs LibTorch; the loader sniffs the
// bytes anyway).
enum class PretrainedFormat {
  kTorchScript,  // OpenAI's TorchScript archives (torch.jit.save)
  kTorchSave,    // torch.save: bare state dict or OpenCLIP training checkpoint
  kSafetensors,  // open_clip_model.safetensors on the HF hub
};

// "torchscript", "torch_save", "safetensors".
const char* PretrainedFormatName(PretrainedFormat format);

struct PretrainedEntry {
  std::string model;  // OpenCLIP config name, e.g. "ViT-B-32"
  std::string tag;    // normalized tag, e.g. "laion2b_s34b_b79k"

  // The source: `url` for OpenAI / GitHub files, else the HF hub repository.
  std::string url;
  std::string hf_repo;  // e.g. "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
  std::string hf_file;  // "open_clip_pytorch_model.bin"
  // "open_clip_model.safetensors" where the repository is known to carry it
  // (preferred by FetchPretrained), else empty.
  std::string hf_safetensors_file;
  PretrainedFormat format = PretrainedFormat::kTorchSave;  // of url / hf_file

  // Expected SHA-256 of the file: 64 hex digits, an 8-hex prefix, or empty
  // when the source publishes none.
  std::string sha256;

  // Image preprocessing the weights were trained with (OpenCLIP's
  // `image_mean` / `image_std`).
  std::array<float, 3> image_mean = {0, 0, 0};
  std::array<float, 3> image_std = {1, 1, 1};
  std::string interpolation = "bicubic";
  std::string resize_mode = "shortest";

  // Whether the weights were trained with QuickGELU (regardless of which
  // config lists them).
  bool quick_gelu = false;

  bool from_hf_hub() const { return url.empty(); }
};

// Every (model, tag) pair, in table order.
std::vector<std::pair<std::string, std::string>> ListPretrained();
// The tags of one model (normalized), in table order; empty if none.
std::vector<std::string> ListPretrainedTags(const std::string& model);

// NOT_FOUND for an unknown model (listing the models that have checkpoints)
// or tag (listing the model's tags).
absl::StatusOr<PretrainedEntry> GetPretrained(const std::string& model, const std::string& tag);

// OpenCLIP's tag normalization: lower case, '-' -> '_'.
std::string NormalizePretrainedTag(const std::string& tag);

// Whether a model built with `config_quick_gelu` mismatches the activation
// the entry's weights were trained with (callers warn and/or force
// `entry.quick_gelu`, as OpenCLIP does for `openai`).
inline bool QuickGeluMismatch(const PretrainedEntry& entry, bool config_quick_gelu) {
  return entry.quick_gelu != config_quick_gelu;
}

// $OCLIP_CACHE if set and non-empty, else ~/.cache/oclip.
std::string CacheDir();

struct FetchOptions {
  // Cache root; empty: CacheDir().
  std::string cache_dir;
  // HF hub base URL; empty: $OCLIP_HF_ENDPOINT, else $HF_ENDPOINT, else
  // https://huggingface.co.
  std::string hf_endpoint;
  std::string hf_revision = "main";
  // Bearer token for gated/private repositories; empty: $HF_TOKEN. Sent to
  // the HF endpoint only (libcurl drops it on redirects to other hosts).
  std::string hf_token;
  // Base URL serving OpenAI / GitHub files by their file name (a mirror);
  // empty: $OCLIP_URL_MIRROR, else the original URLs.
  std::string url_mirror;
  // Fetch open_clip_model.safetensors where the repository has it, falling
  // back to the .bin when the hub answers 404.
  bool prefer_safetensors = true;
  // Passed to DownloadRequest.
  bool progress_bar = true;
  std::function<bool(const DownloadProgress&)> progress;
  int max_attempts = 3;
  int retry_delay_ms = 1000;
};

// Downloads (or finds in the cache) the checkpoint of (model, tag) and
// returns its local path.
absl::StatusOr<std::string> FetchPretrained(const std::string& model, const std::string& tag,
                                            const FetchOptions& options = {});
// The same for an entry that need not come from the registry.
absl::StatusOr<std::string> FetchPretrainedEntry(const PretrainedEntry& entry,
                                                 const FetchOptions& options = {});

// Where a text tower's tokenizer files are published on the HF hub: CLIP's
// BPE (vocab.json + merges.txt) for native towers (empty name), RoBERTa's
// vocab.json + merges.txt, XLM-R's sentencepiece.bpe.model.
struct TokenizerSource {
  std::string hf_repo;
  std::vector<std::string> files;
};
TokenizerSource GetTokenizerSource(const std::string& hf_tokenizer_name);

// Downloads (or finds in the cache) those files and returns their folder,
// which model/tokenizer/load_tokenizer.h accepts as a tokenizer path.
absl::StatusOr<std::string> FetchTokenizer(const std::string& hf_tokenizer_name,
                                           const FetchOptions& options = {});

}  // namespace oclip

#endif  // OCLIP_MODEL_PRETRAINED_H_
