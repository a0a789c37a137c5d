#include "model/pretrained.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "core/status.h"

namespace oclip {
namespace {

constexpr std::array<float, 3> kOpenAiMean = {0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> kOpenAiStd = {0.26862954f, 0.26130258f, 0.27577711f};
constexpr std::array<float, 3> kInceptionMean = {0.5f, 0.5f, 0.5f};
constexpr std::array<float, 3> kInceptionStd = {0.5f, 0.5f, 0.5f};

constexpr char kOpenAiBase[] = "https://openaipublic.azureedge.net/clip/models/";
constexpr char kGithubBase[] =
    "https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/";
constexpr char kDefaultHfEndpoint[] = "https://huggingface.co";
constexpr char kHfWeightsFile[] = "open_clip_pytorch_model.bin";
constexpr char kHfSafetensorsFile[] = "open_clip_model.safetensors";

enum class Source {
  kOpenAi,  // location = "<sha256>/<file>" under kOpenAiBase (TorchScript)
  kGithub,  // location = file name under kGithubBase, "-<sha256 prefix>.pt(h)"
  kHfHub,   // location = repository id; open_clip_pytorch_model.bin
};

struct Row {
  const char* model;
  const char* tag;
  Source source;
  const char* location;
  bool quick_gelu;              // trained with QuickGELU
  bool inception = false;       // INCEPTION mean/std instead of OPENAI
  bool hf_safetensors = false;  // the repository also has open_clip_model.safetensors
};

// OpenCLIP v2.23.0 `pretrained.py`, seed models only. The OpenAI hashes are
// copied verbatim from its URLs. open_clip_model.safetensors is marked only
// for repositories where its presence was confirmed; FetchPretrained falls
// back to the .bin anyway.
constexpr Row kTable[] = {
    // clang-format off
    {"RN50", "openai", Source::kOpenAi, "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt", true},
    {"RN50", "yfcc15m", Source::kGithub, "rn50-quickgelu-yfcc15m-455df137.pt", true},
    {"RN50", "cc12m", Source::kGithub, "rn50-quickgelu-cc12m-f000538c.pt", true},
    {"RN50-quickgelu", "openai", Source::kOpenAi, "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt", true},
    {"RN50-quickgelu", "yfcc15m", Source::kGithub, "rn50-quickgelu-yfcc15m-455df137.pt", true},
    {"RN50-quickgelu", "cc12m", Source::kGithub, "rn50-quickgelu-cc12m-f000538c.pt", true},
    {"RN101", "openai", Source::kOpenAi, "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt", true},
    {"RN101", "yfcc15m", Source::kGithub, "rn101-quickgelu-yfcc15m-3e04b30e.pt", true},
    {"RN101-quickgelu", "openai", Source::kOpenAi, "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt", true},
    {"RN101-quickgelu", "yfcc15m", Source::kGithub, "rn101-quickgelu-yfcc15m-3e04b30e.pt", true},
    {"RN50x4", "openai", Source::kOpenAi, "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt", true},
    {"RN50x16", "openai", Source::kOpenAi, "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt", true},
    {"RN50x64", "openai", Source::kOpenAi, "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt", true},
    {"ViT-B-32", "openai", Source::kOpenAi, "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt", true},
    {"ViT-B-32", "laion400m_e31", Source::kGithub, "vit_b_32-quickgelu-laion400m_e31-d867053b.pt", true},
    {"ViT-B-32", "laion400m_e32", Source::kGithub, "vit_b_32-quickgelu-laion400m_e32-46683a32.pt", true},
    {"ViT-B-32", "laion2b_e16", Source::kGithub, "vit_b_32-laion2b_e16-af8dbd0c.pth", false},
    {"ViT-B-32", "laion2b_s34b_b79k", Source::kHfHub, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", false, false, true},
    {"ViT-B-32-quickgelu", "openai", Source::kOpenAi, "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt", true},
    {"ViT-B-32-quickgelu", "laion400m_e31", Source::kGithub, "vit_b_32-quickgelu-laion400m_e31-d867053b.pt", true},
    {"ViT-B-32-quickgelu", "laion400m_e32", Source::kGithub, "vit_b_32-quickgelu-laion400m_e32-46683a32.pt", true},
    {"ViT-B-16", "openai", Source::kOpenAi, "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt", true},
    {"ViT-B-16", "laion400m_e31", Source::kGithub, "vit_b_16-laion400m_e31-00efa78f.pt", false},
    {"ViT-B-16", "laion400m_e32", Source::kGithub, "vit_b_16-laion400m_e32-55e67d44.pt", false},
    {"ViT-B-16", "laion2b_s34b_b88k", Source::kHfHub, "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", false},
    {"ViT-B-16-plus-240", "laion400m_e31", Source::kGithub, "vit_b_16_plus_240-laion400m_e31-8fb26589.pt", false},
    {"ViT-B-16-plus-240", "laion400m_e32", Source::kGithub, "vit_b_16_plus_240-laion400m_e32-699c4b84.pt", false},
    {"ViT-L-14", "openai", Source::kOpenAi, "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt", true},
    {"ViT-L-14", "laion400m_e31", Source::kGithub, "vit_l_14-laion400m_e31-69988bb6.pt", false},
    {"ViT-L-14", "laion400m_e32", Source::kGithub, "vit_l_14-laion400m_e32-3d133497.pt", false},
    {"ViT-L-14", "laion2b_s32b_b82k", Source::kHfHub, "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", false, true, true},
    {"ViT-L-14-336", "openai", Source::kOpenAi, "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt", true},
    {"ViT-H-14", "laion2b_s32b_b79k", Source::kHfHub, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", false, false, true},
    {"ViT-g-14", "laion2b_s12b_b42k", Source::kHfHub, "laion/CLIP-ViT-g-14-laion2B-s12B-b42K", false},
    {"ViT-g-14", "laion2b_s34b_b88k", Source::kHfHub, "laion/CLIP-ViT-g-14-laion2B-s34B-b88K", false},
    {"roberta-ViT-B-32", "laion2b_s12b_b32k", Source::kHfHub, "laion/CLIP-ViT-B-32-roberta-base-laion2B-s12B-b32k", true},
    {"xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", Source::kHfHub, "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", false},
    {"xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k", Source::kHfHub, "laion/CLIP-ViT-H-14-frozen-xlm-roberta-large-laion5B-s13B-b90k", false},
    // clang-format on
};

std::string NormalizeModelName(const std::string& model) {
  return absl::StrReplaceAll(model, {{"/", "-"}});
}

absl::string_view Basename(absl::string_view path) {
  size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

// OpenCLIP's v0.2-weights names end in "-<first 8 hex digits of the SHA-256>".
std::string GithubHashPrefix(absl::string_view file) {
  absl::string_view stem = file.substr(0, file.rfind('.'));
  return std::string(stem.substr(stem.rfind('-') + 1));
}

PretrainedEntry EntryFromRow(const Row& row) {
  PretrainedEntry entry;
  entry.model = row.model;
  entry.tag = row.tag;
  entry.quick_gelu = row.quick_gelu;
  entry.image_mean = row.inception ? kInceptionMean : kOpenAiMean;
  entry.image_std = row.inception ? kInceptionStd : kOpenAiStd;
  absl::string_view location = row.location;
  switch (row.source) {
    case Source::kOpenAi:
      entry.url = absl::StrCat(kOpenAiBase, location);
      entry.sha256 = std::string(location.substr(0, location.find('/')));
      entry.format = PretrainedFormat::kTorchScript;
      break;
    case Source::kGithub:
      entry.url = absl::StrCat(kGithubBase, location);
      entry.sha256 = GithubHashPrefix(location);
      entry.format = PretrainedFormat::kTorchSave;
      break;
    case Source::kHfHub:
      entry.hf_repo = row.location;
      entry.hf_file = kHfWeightsFile;
      if (row.hf_safetensors) entry.hf_safetensors_file = kHfSafetensorsFile;
      entry.format = PretrainedFormat::kTorchSave;
      break;
  }
  return entry;
}

std::vector<std::string> ModelsWithCheckpoints() {
  std::vector<std::string> models;
  for (const Row& row : kTable) {
    if (std::find(models.begin(), models.end(), row.model) == models.end()) {
      models.push_back(row.model);
    }
  }
  return models;
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? value : fallback;
}

std::string HomeDir() {
  std::string home = EnvOr("HOME", "");
  if (!home.empty()) return home;
  struct passwd pw;
  struct passwd* result = nullptr;
  char buffer[4096];
  if (getpwuid_r(getuid(), &pw, buffer, sizeof(buffer), &result) == 0 && result != nullptr &&
      result->pw_dir != nullptr) {
    return result->pw_dir;
  }
  return ".";
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Repository ids and revisions become folder names: no "..", no absolute
// paths, no characters the hub does not allow.
absl::Status ValidatePathPart(absl::string_view what, absl::string_view value) {
  bool ok = !value.empty() && value.front() != '/' && !absl::StrContains(value, "..") &&
            std::all_of(value.begin(), value.end(), [](char c) {
              return absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '/';
            });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("invalid HF ", what, " '", value, "'"));
}

DownloadRequest BaseRequest(const FetchOptions& options) {
  DownloadRequest request;
  request.progress = options.progress;
  request.progress_bar = options.progress_bar;
  request.max_attempts = options.max_attempts;
  request.retry_delay_ms = options.retry_delay_ms;
  return request;
}

absl::StatusOr<std::string> FetchUrl(const PretrainedEntry& entry, const FetchOptions& options,
                                     const std::string& cache) {
  const std::string file(Basename(entry.url));
  DownloadRequest request = BaseRequest(options);
  std::string mirror =
      options.url_mirror.empty() ? EnvOr("OCLIP_URL_MIRROR", "") : options.url_mirror;
  mirror = std::string(absl::StripSuffix(mirror, "/"));
  request.url = mirror.empty() ? entry.url : absl::StrCat(mirror, "/", file);
  request.destination = absl::StrCat(cache, "/checkpoints/", file);
  request.sha256 = entry.sha256;
  OCLIP_RETURN_IF_ERROR(DownloadFile(request));
  return request.destination;
}

std::string HfFolder(const std::string& cache, const std::string& repo,
                     const FetchOptions& options) {
  return absl::StrCat(cache, "/hf/", repo, "/", options.hf_revision);
}

// Downloads the first of `files` that the repository has (a 404 moves on to
// the next) into the cache, unless one of them is there already.
absl::StatusOr<std::string> FetchHfFile(const std::string& repo,
                                        const std::vector<std::string>& files,
                                        const FetchOptions& options, const std::string& cache) {
  OCLIP_RETURN_IF_ERROR(ValidatePathPart("repository", repo));
  OCLIP_RETURN_IF_ERROR(ValidatePathPart("revision", options.hf_revision));
  const std::string folder = HfFolder(cache, repo, options);
  for (const std::string& file : files) {
    OCLIP_RETURN_IF_ERROR(ValidatePathPart("file", file));
    if (IsFile(absl::StrCat(folder, "/", file))) return absl::StrCat(folder, "/", file);
  }

  std::string endpoint = options.hf_endpoint;
  if (endpoint.empty()) {
    endpoint = EnvOr("OCLIP_HF_ENDPOINT", EnvOr("HF_ENDPOINT", kDefaultHfEndpoint));
  }
  endpoint = std::string(absl::StripSuffix(endpoint, "/"));
  const std::string token = options.hf_token.empty() ? EnvOr("HF_TOKEN", "") : options.hf_token;
  const std::string revision = absl::StrReplaceAll(options.hf_revision, {{"/", "%2F"}});

  absl::Status status;
  for (const std::string& file : files) {
    DownloadRequest request = BaseRequest(options);
    request.url = absl::StrCat(endpoint, "/", repo, "/resolve/", revision, "/", file);
    request.destination = absl::StrCat(folder, "/", file);
    if (!token.empty()) request.headers.push_back(absl::StrCat("Authorization: Bearer ", token));
    status = DownloadFile(request);
    if (status.ok()) return request.destination;
    if (!absl::IsNotFound(status)) return status;
  }
  return status;
}

absl::StatusOr<std::string> FetchHf(const PretrainedEntry& entry, const FetchOptions& options,
                                    const std::string& cache) {
  std::vector<std::string> files;
  if (options.prefer_safetensors && !entry.hf_safetensors_file.empty()) {
    files.push_back(entry.hf_safetensors_file);
  }
  files.push_back(entry.hf_file);
  return FetchHfFile(entry.hf_repo, files, options, cache);
}

}  // namespace

const char* PretrainedFormatName(PretrainedFormat format) {
  switch (format) {
    case PretrainedFormat::kTorchScript:
      return "torchscript";
    case PretrainedFormat::kTorchSave:
      return "torch_save";
    case PretrainedFormat::kSafetensors:
      return "safetensors";
  }
  return "unknown";
}

std::string NormalizePretrainedTag(const std::string& tag) {
  return absl::StrReplaceAll(absl::AsciiStrToLower(tag), {{"-", "_"}});
}

std::vector<std::pair<std::string, std::string>> ListPretrained() {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const Row& row : kTable) pairs.emplace_back(row.model, row.tag);
  return pairs;
}

std::vector<std::string> ListPretrainedTags(const std::string& model) {
  const std::string name = NormalizeModelName(model);
  std::vector<std::string> tags;
  for (const Row& row : kTable) {
    if (name == row.model) tags.push_back(row.tag);
  }
  return tags;
}

absl::StatusOr<PretrainedEntry> GetPretrained(const std::string& model, const std::string& tag) {
  const std::string name = NormalizeModelName(model);
  const std::string normalized = NormalizePretrainedTag(tag);
  for (const Row& row : kTable) {
    if (name == row.model && normalized == row.tag) return EntryFromRow(row);
  }
  std::vector<std::string> tags = ListPretrainedTags(name);
  if (tags.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no pretrained checkpoints for model '", model,
                     "'; models with checkpoints: ", absl::StrJoin(ModelsWithCheckpoints(), ", ")));
  }
  return absl::NotFoundError(absl::StrCat("unknown pretrained tag '", tag, "' for ", name,
                                          "; available: ", absl::StrJoin(tags, ", ")));
}

std::string CacheDir() {
  std::string cache = EnvOr("OCLIP_CACHE", "");
  if (!cache.empty()) return cache;
  return HomeDir() + "/.cache/oclip";
}

absl::StatusOr<std::string> FetchPretrainedEntry(const PretrainedEntry& entry,
                                                 const FetchOptions& options) {
  const std::string cache = options.cache_dir.empty() ? CacheDir() : options.cache_dir;
  if (!entry.url.empty()) return FetchUrl(entry, options, cache);
  if (!entry.hf_repo.empty()) return FetchHf(entry, options, cache);
  return absl::InvalidArgumentError(
      absl::StrCat("pretrained entry ", entry.model, " ", entry.tag, " has no source"));
}

TokenizerSource GetTokenizerSource(const std::string& hf_tokenizer_name) {
  if (hf_tokenizer_name.empty()) {
    // CLIP's BPE in HF's layout (vocab.json + merges.txt), as OpenAI publishes it.
    return {"openai/clip-vit-base-patch32", {"vocab.json", "merges.txt"}};
  }
  if (absl::StartsWith(hf_tokenizer_name, "xlm-roberta")) {
    return {absl::StrCat("FacebookAI/", hf_tokenizer_name), {"sentencepiece.bpe.model"}};
  }
  return {absl::StrCat("FacebookAI/", hf_tokenizer_name), {"vocab.json", "merges.txt"}};
}

absl::StatusOr<std::string> FetchTokenizer(const std::string& hf_tokenizer_name,
                                           const FetchOptions& options) {
  const TokenizerSource source = GetTokenizerSource(hf_tokenizer_name);
  const std::string cache = options.cache_dir.empty() ? CacheDir() : options.cache_dir;
  for (const std::string& file : source.files) {
    OCLIP_RETURN_IF_ERROR(FetchHfFile(source.hf_repo, {file}, options, cache).status());
  }
  return HfFolder(cache, source.hf_repo, options);
}

absl::StatusOr<std::string> FetchPretrained(const std::string& model, const std::string& tag,
                                            const FetchOptions& options) {
  OCLIP_ASSIGN_OR_RETURN(PretrainedEntry entry, GetPretrained(model, tag));
  return FetchPretrainedEntry(entry, options);
}

}  // namespace oclip
