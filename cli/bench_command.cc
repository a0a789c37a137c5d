// `oclip bench`: throughput of the encode paths, one JSON object per run on
// stdout. Speed is measured here (and in bench/), never in tests.

#include <iostream>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "model/image/preprocess.h"
#include "model/inference_precision.h"
#include "model/openblas_core.h"
#include "model/tokenizer/load_tokenizer.h"

namespace oclip::cli {
namespace {

absl::Status BenchPreprocess(const std::string& image, int64_t size, bool fast, double seconds) {
  if (image.empty()) return absl::InvalidArgumentError("--image is required");
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(image));
  PreprocessOptions options;
  options.image_size = static_cast<int>(size);
  options.fast_jpeg_shrink = fast;
  std::vector<float> out(3 * size * size);
  OCLIP_ASSIGN_OR_RETURN(double rate, MeasureThroughput(seconds, 1, [&] {
                           return PreprocessImageBytes(file->view(), options, out.data());
                         }));
  nlohmann::json result = {{"benchmark", "preprocess"}, {"image", image},
                           {"size", size},              {"mode", fast ? "fast" : "parity"},
                           {"threads", 1},              {"images_per_second", rate}};
  std::cout << result.dump() << "\n";
  return absl::OkStatus();
}

// Mean and smallest cosine similarity of corresponding rows.
nlohmann::json RowCosines(const torch::Tensor& actual, const torch::Tensor& expected) {
  const torch::Tensor cosines = torch::cosine_similarity(actual.to(torch::kDouble),
                                                         expected.to(torch::kDouble), 1);
  return {{"mean", cosines.mean().item<double>()}, {"min", cosines.min().item<double>()}};
}

struct EncodeBenchOptions {
  std::string precision = "fp32";
  bool prepare = true;  // false: the plain forward, without prepared kernels
  int64_t image_batch = 32;
  int64_t text_batch = 32;
  int64_t text_tokens = 12;  // tokens per caption, <start> and <end> included
  double seconds = 3;
};

absl::Status BenchEncode(const ModelFlags& model_flags, const EncodeBenchOptions& options) {
  if (model_flags.model.empty()) return absl::InvalidArgumentError("--model is required");
  OCLIP_ASSIGN_OR_RETURN(InferencePrecision precision,
                         ParseInferencePrecision(options.precision));
  if (!options.prepare && precision != InferencePrecision::kFp32) {
    return absl::InvalidArgumentError("--no-prepare measures the plain fp32 forward only");
  }
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, model_flags.LoadModel());
  const int64_t s = model->config().vision.image_size;
  torch::manual_seed(0);
  torch::Tensor images = torch::randn({options.image_batch, 3, s, s});
  const int64_t text_tokens =
      std::clamp<int64_t>(options.text_tokens, 2, model->config().text.context_length);
  const torch::Tensor tokens = BenchmarkTokens(model->config(), options.text_batch, text_tokens);
  // The plain fp32 forward on the same inputs is the reference the prepared
  // precision is compared with.
  torch::Tensor reference_image, reference_text;
  {
    torch::InferenceMode inference;
    OCLIP_ASSIGN_OR_RETURN(reference_image, model->EncodeImage(images));
    OCLIP_ASSIGN_OR_RETURN(reference_text, model->EncodeText(tokens));
  }
  // The BLAS kernels LibTorch's own fp32 GEMMs (the reference forward above,
  // and every unprepared layer) ran on.
  nlohmann::json kernels = {{"prepared", options.prepare}, {"openblas", OpenBlasCoreName()}};
  if (options.prepare) {
    OCLIP_ASSIGN_OR_RETURN(PreparedKernels prepared, PrepareForInference(*model, precision));
    kernels.update({{"linear", prepared.linear_kernel},
                    {"conv", prepared.conv_kernel},
                    {"attention", prepared.attention_kernel},
                    {"linears", prepared.linears},
                    {"convolutions", prepared.convolutions},
                    {"folded_batch_norms", prepared.folded_batch_norms}});
  }
  torch::InferenceMode inference;
  OCLIP_ASSIGN_OR_RETURN(torch::Tensor image_features, model->EncodeImage(images));
  OCLIP_ASSIGN_OR_RETURN(torch::Tensor text_features, model->EncodeText(tokens));
  OCLIP_ASSIGN_OR_RETURN(double image_rate,
                         MeasureThroughput(options.seconds, options.image_batch, [&] {
                           return model->EncodeImage(images).status();
                         }));
  OCLIP_ASSIGN_OR_RETURN(double text_rate,
                         MeasureThroughput(options.seconds, options.text_batch, [&] {
                           return model->EncodeText(tokens).status();
                         }));
  nlohmann::json result = {{"benchmark", "encode"},
                           {"model", model_flags.model},
                           {"precision", InferencePrecisionName(precision)},
                           {"batch", options.image_batch},
                           {"text_batch", options.text_batch},
                           {"text_tokens", text_tokens},
                           {"threads", torch::get_num_threads()},
                           {"images_per_second", image_rate},
                           {"texts_per_second", text_rate},
                           {"image_cosine_to_fp32", RowCosines(image_features, reference_image)},
                           {"text_cosine_to_fp32", RowCosines(text_features, reference_text)},
                           {"kernels", kernels}};
  std::cout << result.dump() << "\n";
  return absl::OkStatus();
}

// Short captions like those of web image datasets, deterministic.
std::vector<std::string> SyntheticCaptions(int count) {
  static const char* kWords[] = {"dog",    "cat",     "beach",  "red",    "running", "old",
                                 "city",   "street",  "night",  "mountain", "lake", "happy",
                                 "family", "wooden",  "table",  "with",   "two",     "people",
                                 "sunset", "vintage", "poster", "blue",   "car",     "garden"};
  constexpr int kNumWords = sizeof(kWords) / sizeof(kWords[0]);
  std::vector<std::string> captions;
  uint32_t state = 12345;
  for (int i = 0; i < count; ++i) {
    std::string caption = "A photo of";
    const int length = 3 + i % 6;
    for (int w = 0; w < length; ++w) {
      state = state * 1664525u + 1013904223u;
      absl::StrAppend(&caption, " ", kWords[(state >> 16) % kNumWords]);
    }
    captions.push_back(caption + ".");
  }
  return captions;
}

absl::Status BenchTokenize(const std::string& tokenizer_path, const std::string& model_name,
                           const std::string& texts_file, double seconds) {
  if (tokenizer_path.empty()) return absl::InvalidArgumentError("--tokenizer is required");
  OCLIP_ASSIGN_OR_RETURN(ModelConfig config, ResolveModelConfig(model_name));
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                         LoadTokenizer(config, tokenizer_path));
  OCLIP_ASSIGN_OR_RETURN(std::vector<std::string> texts, CollectTexts({}, texts_file));
  if (texts.empty()) texts = SyntheticCaptions(10000);
  OCLIP_ASSIGN_OR_RETURN(double rate, MeasureThroughput(seconds, texts.size(), [&] {
                           tokenizer->Tokenize(texts);
                           return absl::OkStatus();
                         }));
  nlohmann::json result = {{"benchmark", "tokenize"},
                           {"model", model_name},
                           {"texts", texts.size()},
                           {"threads", 1},
                           {"texts_per_second", rate}};
  std::cout << result.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunBench(int argc, char** argv) {
  const std::string kind = argc > 0 ? argv[0] : "";
  if (kind == "serve") return RunBenchServe(argc - 1, argv + 1);
  if (kind == "embed") return RunBenchEmbed(argc - 1, argv + 1);
  if (kind == "index") return RunBenchIndex(argc - 1, argv + 1);
  if (kind == "train") return RunBenchTrain(argc - 1, argv + 1);
  if (kind == "soak") return RunBenchSoak(argc - 1, argv + 1);
  if (kind != "preprocess" && kind != "encode" && kind != "tokenize") {
    std::cerr << "usage: oclip bench preprocess|tokenize|encode|serve|embed|index|train|soak [flags] "
                 "(see oclip bench KIND --help)\n";
    return 2;
  }
  std::string image, model, tokenizer, texts_file;
  int64_t size = 224, batch = 32, seconds_flag = 3;
  ModelFlags model_flags;
  model_flags.pretrained = "random";
  EncodeBenchOptions encode;
  int64_t text_batch = 0;
  bool fast = false;
  bool no_prepare = false;
  FlagSet flags("bench " + kind,
                kind == "preprocess" ? "Images per second of decode + resize + crop + normalize "
                                       "(one thread)."
                : kind == "tokenize" ? "Texts per second of batch tokenization (one thread)."
                                     : "Images and texts per second of the model's towers.");
  if (kind == "preprocess") {
    flags.AddString("image", &image, "image file to preprocess repeatedly");
    flags.AddInt("size", &size, "model input size (default 224)");
    flags.AddBool("fast", &fast, "JPEG shrink-on-load before resampling (not PIL-exact)");
  } else if (kind == "tokenize") {
    model = "ViT-B-32";
    flags.AddString("tokenizer", &tokenizer, "tokenizer file or directory");
    flags.AddString("model", &model, "model whose tokenizer kind to use (default ViT-B-32)");
    flags.AddString("texts-file", &texts_file,
                    "texts, one per line (default: 10,000 synthetic short captions)");
  } else {
    model_flags.Register(flags);  // --pretrained defaults to "random" here.
    flags.AddInt("batch", &batch, "batch size (default 32)");
    flags.AddInt("text-batch", &text_batch, "batch size of the text tower (default: --batch)");
    flags.AddInt("text-tokens", &encode.text_tokens,
                 "tokens per caption, <start> and <end> included (default 12; the context "
                 "length measures the longest captions)");
    flags.AddString("precision", &encode.precision,
                    "fp32 | bf16 | int8: kernels prepared for CPU inference (default fp32)");
    flags.AddBool("no-prepare", &no_prepare,
                  "measure the plain fp32 forward, without prepared kernels");
  }
  flags.AddInt("seconds", &seconds_flag, "minimum measuring time per figure (default 3)");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc - 1, argv + 1)) return *exit_code;
  const double seconds = static_cast<double>(std::max<int64_t>(seconds_flag, 0));
  encode.prepare = !no_prepare;
  encode.image_batch = std::max<int64_t>(batch, 1);
  encode.text_batch = text_batch > 0 ? text_batch : encode.image_batch;
  encode.seconds = seconds;
  absl::Status status =
      kind == "preprocess" ? BenchPreprocess(image, size, fast, seconds)
      : kind == "tokenize" ? BenchTokenize(tokenizer, model, texts_file, seconds)
                           : BenchEncode(model_flags, encode);
  if (!status.ok()) {
    std::cerr << "oclip bench: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
