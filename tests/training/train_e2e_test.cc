// End-to-end tests of `oclip train` (the real executable) on a small,
// learnable synthetic image-caption set written by the test:
//   - a few hundred steps lower the loss clearly and give zero-shot accuracy
//     far above chance on held-out images; the TensorBoard file parses back;
//     the checkpoint loads in `oclip encode`, whose features reproduce the
//     validation loss the training process computed;
//   - a run interrupted after an epoch and resumed with `--resume latest`
//     follows the uninterrupted run's loss curve;
//   - `oclip launch` with two Gloo ranks follows the one-process run with the
//     same global batch.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "core/tensorboard_writer.h"
#include "model/config.h"
#include "model/image/preprocess.h"
#include "model/tokenizer/load_tokenizer.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/training/synthetic_data.h"
#include "training/clip_loss.h"

namespace oclip {
namespace {

using testing::ReadFileOrEmpty;
using testing::ReferencePath;
using testing::RunCommand;
using testing::ScratchPath;

constexpr char kConfig[] = R"({
  "embed_dim": 32,
  "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
})";

struct Fixture {
  std::string config;
  std::string templates;
  testing::SyntheticDataset data;
};

const Fixture& Data() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture;
    const std::string dir = ScratchPath("synthetic");
    f->config = ScratchPath("tiny-train.json");
    std::ofstream(f->config) << kConfig;
    f->templates = ScratchPath("templates.txt");
    std::ofstream(f->templates) << "a photo of a {}.\n";
    auto data = testing::WriteSyntheticDataset(dir, /*train_samples=*/512, /*val_samples=*/64,
                                               /*image_size=*/32, /*seed=*/1);
    EXPECT_TRUE(data.ok()) << data.status();
    if (data.ok()) f->data = *data;
    return f;
  }();
  return *fixture;
}

std::vector<std::string> TrainArgs(const std::string& logs, const std::string& name, int epochs,
                                   int batch_size = 32, int threads = 2) {
  const Fixture& f = Data();
  return {OCLIP_BINARY,
          "train",
          "--model",
          f.config,
          "--pretrained",
          "random",
          "--tokenizer",
          ReferencePath("bpe_simple_vocab_16e6.txt.gz"),
          "--train-data",
          f.data.csv_path,
          "--csv-separator",
          "\t",
          "--batch-size",
          std::to_string(batch_size),
          "--epochs",
          std::to_string(epochs),
          "--lr",
          "2e-3",
          "--warmup",
          "20",
          "--wd",
          "0.1",
          "--workers",
          "2",
          "--threads",
          std::to_string(threads),
          "--logs",
          logs,
          "--name",
          name,
          "--log-every-n-steps",
          "1",
          "--seed",
          "3"};
}

std::vector<std::string> With(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// step -> loss from out.log's "Train Epoch" lines (after `after_line`, if given).
std::map<int64_t, double> LossCurve(const std::string& out_log,
                                    const std::string& after_line = "") {
  std::map<int64_t, double> curve;
  std::string text = ReadFileOrEmpty(out_log);
  if (!after_line.empty()) {
    const size_t at = text.rfind(after_line);
    text = at == std::string::npos ? "" : text.substr(at);
  }
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const size_t step_at = line.find("Step: ");
    const size_t loss_at = line.find("Loss: ");
    if (step_at == absl::string_view::npos || loss_at == absl::string_view::npos) continue;
    int64_t step;
    double loss;
    std::vector<absl::string_view> step_word = absl::StrSplit(line.substr(step_at + 6), ' ');
    std::vector<absl::string_view> loss_word = absl::StrSplit(line.substr(loss_at + 6), ' ');
    if (absl::SimpleAtoi(step_word[0], &step) && absl::SimpleAtod(loss_word[0], &loss)) {
      curve[step] = loss;
    }
  }
  return curve;
}

std::vector<nlohmann::json> Results(const std::string& run_dir) {
  std::vector<nlohmann::json> lines;
  for (absl::string_view line :
       absl::StrSplit(ReadFileOrEmpty(run_dir + "/checkpoints/results.jsonl"), '\n')) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

double Mean(const std::map<int64_t, double>& curve, size_t first, size_t count) {
  double sum = 0;
  size_t i = 0, n = 0;
  for (const auto& [step, loss] : curve) {
    if (i >= first && i < first + count) {
      sum += loss;
      ++n;
    }
    ++i;
  }
  return n ? sum / n : NAN;
}

TEST(TrainE2eTest, LearnsTheSyntheticSetAndItsCheckpointEncodes) {
  const Fixture& f = Data();
  ASSERT_FALSE(f.data.csv_path.empty());
  const std::string logs = ScratchPath("logs");
  const int kEpochs = 12;  // 16 steps each: 192 steps.
  testing::CommandResult run =
      RunCommand(With(TrainArgs(logs, "learn", kEpochs),
                      {"--val-data", f.data.val_csv_path, "--imagenet-val", f.data.imagenet_val_dir,
                       "--zeroshot-classnames", f.data.classnames_path, "--zeroshot-templates",
                       f.templates, "--zeroshot-frequency", "100", "--val-frequency", "100",
                       "--save-frequency", "100", "--report-to", "tensorboard"}));
  ASSERT_EQ(run.exit_code, 0) << run.command << "\n" << run.err;
  const std::string run_dir = logs + "/learn";

  // The loss falls clearly: chance level is ln(32) = 3.47 for batch 32.
  const std::map<int64_t, double> curve = LossCurve(run_dir + "/out.log");
  ASSERT_EQ(curve.size(), 16u * kEpochs);
  const double start = Mean(curve, 0, 10), end = Mean(curve, curve.size() - 10, 10);
  EXPECT_GT(start, 3.0);
  EXPECT_LT(end, start - 1.0) << "start " << start << " end " << end;

  // Zero-shot on held-out images: 8 classes, chance 0.125. (In this budget
  // the tiny model learns the colours -- loss ~ln 8 for 4 colours per batch
  // of 32 -- and the shapes only partly: top-1 ~0.5.)
  const std::vector<nlohmann::json> results = Results(run_dir);
  ASSERT_EQ(results.size(), 1u) << "only the last epoch is evaluated";
  const nlohmann::json& metrics = results[0];
  EXPECT_EQ(metrics["epoch"].get<double>(), kEpochs);
  EXPECT_GE(metrics["imagenet-zeroshot-val-top1"].get<double>(), 0.4) << metrics.dump();
  EXPECT_GE(metrics["imagenet-zeroshot-val-top5"].get<double>(),
            metrics["imagenet-zeroshot-val-top1"].get<double>());
  EXPECT_EQ(metrics["num_samples"].get<double>(), 64);

  // TensorBoard: every logged step's loss, and the eval metrics at x = epoch.
  const std::string tb_dir = run_dir + "/tensorboard";
  std::string event_file;
  {
    testing::CommandResult ls = RunCommand({"sh", "-c", "ls " + tb_dir + "/events.out.tfevents.*"});
    ASSERT_EQ(ls.exit_code, 0) << ls.err;
    event_file = std::string(absl::StripTrailingAsciiWhitespace(ls.out));
  }
  auto scalars = ReadTensorBoardScalars(event_file);
  ASSERT_TRUE(scalars.ok()) << scalars.status();
  std::map<int64_t, double> tb_loss;
  double tb_top1 = -1;
  for (const ScalarEvent& e : *scalars) {
    if (e.tag == "train/loss") tb_loss[e.step] = e.value;
    if (e.tag == "val/imagenet-zeroshot-val-top1") {
      EXPECT_EQ(e.step, kEpochs);
      tb_top1 = e.value;
    }
  }
  ASSERT_EQ(tb_loss.size(), curve.size());
  for (const auto& [step, loss] : curve) EXPECT_NEAR(tb_loss[step], loss, 1e-6 * std::abs(loss));
  EXPECT_NEAR(tb_top1, metrics["imagenet-zeroshot-val-top1"].get<double>(), 1e-6);

  // The checkpoint in `oclip encode`: features of the validation images and
  // captions give the validation loss and ranks the trainer logged.
  const std::string checkpoint =
      run_dir + "/checkpoints/epoch_" + std::to_string(kEpochs) + ".safetensors";
  std::vector<std::string> images, captions;
  bool header = true;
  for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(f.data.val_csv_path), '\n')) {
    if (line.empty()) continue;
    if (header) {
      header = false;
      continue;
    }
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    ASSERT_EQ(fields.size(), 2u) << line;
    images.push_back(fields[0]);
    captions.push_back(fields[1]);
  }
  ASSERT_EQ(images.size(), 64u);
  const std::string texts_file = ScratchPath("val_captions.txt");
  {
    std::ofstream out(texts_file);
    for (const std::string& c : captions) out << c << "\n";
  }
  std::vector<std::string> encode = {OCLIP_BINARY,
                                     "encode",
                                     "--model",
                                     f.config,
                                     "--pretrained",
                                     checkpoint,
                                     "--tokenizer",
                                     ReferencePath("bpe_simple_vocab_16e6.txt.gz"),
                                     "--normalize",
                                     "--texts-file",
                                     texts_file,
                                     "--output",
                                     ScratchPath("encoded")};
  for (const std::string& image : images) {
    encode.push_back("--image");
    encode.push_back(image);
  }
  ASSERT_EQ(::mkdir(ScratchPath("encoded").c_str(), 0755), 0);
  testing::CommandResult encoded = RunCommand(encode);
  ASSERT_EQ(encoded.exit_code, 0) << encoded.err;
  auto image_npy = ReadNpyFloat32(ScratchPath("encoded/image_features.npy"));
  auto text_npy = ReadNpyFloat32(ScratchPath("encoded/text_features.npy"));
  ASSERT_TRUE(image_npy.ok() && text_npy.ok());
  const torch::Tensor image_features =
      torch::from_blob(image_npy->values.data(), {64, image_npy->shape[1]}).clone();
  const torch::Tensor text_features =
      torch::from_blob(text_npy->values.data(), {64, text_npy->shape[1]}).clone();
  auto reader = SafetensorsReader::Open(checkpoint);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto scale_view = (*reader)->Get("logit_scale");
  ASSERT_TRUE(scale_view.ok());
  float raw_scale;
  std::memcpy(&raw_scale, scale_view->data, sizeof(float));
  const torch::Tensor scale = torch::tensor(std::exp(raw_scale));
  // The trainer's val loss: per batch of --batch-size (32), sample-weighted.
  double val_loss = 0;
  for (int b = 0; b < 2; ++b) {
    val_loss += ClipLoss(image_features.narrow(0, 32 * b, 32), text_features.narrow(0, 32 * b, 32),
                         scale, {}, nullptr)
                    .item<double>() /
                2;
  }
  EXPECT_NEAR(val_loss, metrics["clip_val_loss"].get<double>(),
              1e-4 * metrics["clip_val_loss"].get<double>());
  // Captions repeat (8 classes), so ranks among equal logits depend on the
  // sort's tie order: the mean rank lies between the optimistic and the
  // pessimistic count.
  const torch::Tensor logits = scale * image_features.matmul(text_features.t());
  const torch::Tensor truth = logits.diagonal().view({-1, 1});
  const double best = (logits > truth + 1e-4).sum(1).to(torch::kDouble).mean().item<double>() + 1;
  const double worst =
      (logits >= truth - 1e-4).sum(1).to(torch::kDouble).mean().item<double>();  // includes self
  const double mean_rank = metrics["image_to_text_mean_rank"].get<double>();
  EXPECT_GE(mean_rank, best);
  EXPECT_LE(mean_rank, worst);
}

TEST(TrainE2eTest, ResumedRunFollowsTheUninterruptedCurve) {
  const std::string logs = ScratchPath("resume_logs");
  const int kEpochs = 2;
  testing::CommandResult full = RunCommand(TrainArgs(logs, "full", kEpochs));
  ASSERT_EQ(full.exit_code, 0) << full.command << "\n" << full.err;
  testing::CommandResult first = RunCommand(TrainArgs(logs, "cut", kEpochs));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  // The state a crash during the second epoch leaves: only epoch_1 was saved.
  for (int epoch : {2}) {
    for (const char* suffix : {".safetensors", ".state.safetensors"}) {
      const std::string path = absl::StrCat(logs, "/cut/checkpoints/epoch_", epoch, suffix);
      ASSERT_EQ(::unlink(path.c_str()), 0) << path;
    }
  }
  // Without --resume the existing run directory is refused.
  testing::CommandResult refused = RunCommand(TrainArgs(logs, "cut", kEpochs));
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("already exists"), std::string::npos) << refused.err;

  testing::CommandResult resumed =
      RunCommand(With(TrainArgs(logs, "cut", kEpochs), {"--resume", "latest"}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  const std::map<int64_t, double> reference = LossCurve(logs + "/full/out.log");
  const std::map<int64_t, double> continued =
      LossCurve(logs + "/cut/out.log", "=> resuming checkpoint");
  ASSERT_EQ(reference.size(), 32u);
  ASSERT_EQ(continued.size(), 16u);  // The second epoch.
  for (const auto& [step, loss] : continued) {
    ASSERT_TRUE(reference.count(step)) << step;
    EXPECT_NEAR(loss, reference.at(step), 1e-5 * std::abs(reference.at(step))) << "step " << step;
  }
  EXPECT_EQ(continued.begin()->first, 16);
}

TEST(TrainE2eTest, AccumulationMatchesTheWholeBatch) {
  // --accum-freq 2 with batches of 16 computes each step's loss over the same
  // 32 samples as one batch of 32 (all micro-batches are negatives), with the
  // same gradient.
  const std::string logs = ScratchPath("accum_logs");
  testing::CommandResult whole = RunCommand(TrainArgs(logs, "whole", 1, 32));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  testing::CommandResult accum =
      RunCommand(With(TrainArgs(logs, "accum", 1, 16), {"--accum-freq", "2"}));
  ASSERT_EQ(accum.exit_code, 0) << accum.err;
  const std::map<int64_t, double> reference = LossCurve(logs + "/whole/out.log");
  const std::map<int64_t, double> curve = LossCurve(logs + "/accum/out.log");
  ASSERT_EQ(reference.size(), 16u);
  ASSERT_EQ(curve.size(), reference.size());
  EXPECT_NEAR(curve.at(0), reference.at(0), 1e-5 * reference.at(0));
  for (const auto& [step, loss] : curve) {
    EXPECT_NEAR(loss, reference.at(step), 1e-3 * reference.at(step)) << "step " << step;
  }
}

TEST(TrainE2eTest, NonFiniteLossesStopTheRunAndKeepTheLastCheckpoint) {
  const std::string logs = ScratchPath("nan_logs");
  testing::CommandResult good = RunCommand(TrainArgs(logs, "run", 1));
  ASSERT_EQ(good.exit_code, 0) << good.err;
  const std::string checkpoint = logs + "/run/checkpoints/epoch_1.safetensors";
  const std::string before = ReadFileOrEmpty(checkpoint);
  ASSERT_FALSE(before.empty());
  // An absurd learning rate blows the weights up after one step.
  std::vector<std::string> args = TrainArgs(logs, "run", 2);
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--lr") args[i + 1] = "1e9";
  }
  testing::CommandResult blown =
      RunCommand(With(args, {"--resume", "latest", "--max-nonfinite-steps", "3"}));
  EXPECT_EQ(blown.exit_code, 1);
  EXPECT_NE(blown.err.find("4 consecutive non-finite losses (limit 3)"), std::string::npos)
      << blown.err;
  const std::string log = ReadFileOrEmpty(logs + "/run/out.log");
  EXPECT_NE(log.find("non-finite loss, step skipped (3 in a row)"), std::string::npos);
  EXPECT_EQ(ReadFileOrEmpty(checkpoint), before);
  EXPECT_TRUE(ReadFileOrEmpty(logs + "/run/checkpoints/epoch_2.safetensors").empty());
}

TEST(TrainE2eTest, Bf16PrecisionsTrainCloseToFp32) {
  const std::string logs = ScratchPath("precision_logs");
  testing::CommandResult fp32 = RunCommand(TrainArgs(logs, "fp32", 1));
  ASSERT_EQ(fp32.exit_code, 0) << fp32.err;
  const std::map<int64_t, double> reference = LossCurve(logs + "/fp32/out.log");
  ASSERT_EQ(reference.size(), 16u);
  for (const std::string precision : {"amp_bf16", "pure_bf16"}) {
    testing::CommandResult run =
        RunCommand(With(TrainArgs(logs, precision, 1), {"--precision", precision}));
    ASSERT_EQ(run.exit_code, 0) << precision << "\n" << run.err;
    const std::map<int64_t, double> curve = LossCurve(logs + "/" + precision + "/out.log");
    ASSERT_EQ(curve.size(), reference.size()) << precision;
    // bf16 keeps 8 bits of mantissa: the first loss within 2%, the trained
    // curve within 10% of fp32's.
    EXPECT_NEAR(curve.at(0), reference.at(0), 0.02 * reference.at(0)) << precision;
    EXPECT_NEAR(Mean(curve, 11, 5), Mean(reference, 11, 5), 0.1 * Mean(reference, 11, 5))
        << precision;
  }
}

// name -> tensor bytes of a model checkpoint.
std::map<std::string, std::string> CheckpointTensors(const std::string& path) {
  std::map<std::string, std::string> tensors;
  auto reader = SafetensorsReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return tensors;
  for (const std::string& name : (*reader)->names()) {
    auto view = (*reader)->Get(name);
    tensors[name] = std::string(reinterpret_cast<const char*>(view->data), view->size_bytes);
  }
  return tensors;
}

// The checkpoint of one epoch of training with `extra` flags; "init" trains
// with lr 0, which gives the initial weights.
std::map<std::string, std::string> TrainOneEpoch(const std::string& logs, const std::string& name,
                                                 const std::vector<std::string>& extra) {
  std::vector<std::string> args = TrainArgs(logs, name, 1, 64, /*threads=*/1);
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--lr" && name == "init") args[i + 1] = "0";
  }
  testing::CommandResult result = RunCommand(With(args, extra));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return CheckpointTensors(logs + "/" + name + "/checkpoints/epoch_1.safetensors");
}

TEST(TrainE2eTest, LockImageFreezesTheImageTowerButItsLastGroups) {
  const std::string logs = ScratchPath("lock_logs");
  auto run = [&](const std::string& name, const std::vector<std::string>& extra) {
    return TrainOneEpoch(logs, name, extra);
  };
  const auto init = run("init", {});
  const auto locked = run("locked", {"--lock-image"});
  const auto last = run("last", {"--lock-image", "--lock-image-unlocked-groups", "1"});
  ASSERT_FALSE(init.empty());
  for (const auto& [name, bytes] : init) {
    const bool visual = name.rfind("visual.", 0) == 0;
    EXPECT_EQ(locked.at(name) == bytes, visual) << name;
    EXPECT_EQ(last.at(name) == bytes, visual && name != "visual.proj") << name;
  }
}

// --grad-checkpointing through the CLI: accepted, recorded in params.txt, and
// the run trains as the same run without it (same loss curve, same weights).
TEST(TrainE2eTest, GradCheckpointingTrainsAsWithout) {
  const std::string logs = ScratchPath("grad_checkpointing_logs");
  const auto plain = TrainOneEpoch(logs, "plain", {});
  const auto checkpointed = TrainOneEpoch(logs, "checkpointed", {"--grad-checkpointing"});
  EXPECT_NE(ReadFileOrEmpty(logs + "/checkpointed/params.txt").find("grad_checkpointing: True"),
            std::string::npos);
  const std::map<int64_t, double> reference = LossCurve(logs + "/plain/out.log");
  const std::map<int64_t, double> curve = LossCurve(logs + "/checkpointed/out.log");
  ASSERT_EQ(reference.size(), 8u);  // 512 samples / 64.
  ASSERT_EQ(curve.size(), reference.size());
  for (const auto& [step, loss] : curve) {
    EXPECT_NEAR(loss, reference.at(step), 1e-5 * reference.at(step)) << "step " << step;
  }
  ASSERT_FALSE(plain.empty());
  ASSERT_EQ(checkpointed.size(), plain.size());
  for (const auto& [name, bytes] : plain) {
    const std::string& other = checkpointed.at(name);
    ASSERT_EQ(other.size(), bytes.size()) << name;
    const int64_t n = static_cast<int64_t>(bytes.size() / sizeof(float));
    const torch::Tensor expected =
        torch::from_blob(const_cast<char*>(bytes.data()), {n}, torch::kFloat);
    const torch::Tensor actual =
        torch::from_blob(const_cast<char*>(other.data()), {n}, torch::kFloat);
    EXPECT_LT(((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item<double>(),
              1e-5)
        << name;
  }
}

// Rows of an .npy file written by `oclip encode` or encode_reference.py.
torch::Tensor ReadFeatures(const std::string& path) {
  auto npy = ReadNpyFloat32(path);
  EXPECT_TRUE(npy.ok()) << path << ": " << npy.status();
  if (!npy.ok() || npy->shape.size() != 2) return torch::Tensor();
  return torch::from_blob(npy->values.data(), {npy->shape[0], npy->shape[1]}).clone();
}

// Python reads oclip's training checkpoints: OpenCLIP's model in plain
// torch.nn (bench/python/encode_reference.py --encode, on Debian's PyTorch)
// loads a checkpoint of `oclip train` with load_state_dict(strict=True) and
// computes the features `oclip encode` computes from the same inputs (the
// images preprocessed and the captions tokenized as oclip does).
TEST(TrainE2eTest, PythonLoadsTheTrainedCheckpoint) {
  const Fixture& f = Data();
  const std::string logs = ScratchPath("python_logs");
  ASSERT_FALSE(TrainOneEpoch(logs, "run", {}).empty());
  const std::string checkpoint = logs + "/run/checkpoints/epoch_1.safetensors";

  std::vector<std::string> images, captions;
  std::vector<std::string> lines = absl::StrSplit(ReadFileOrEmpty(f.data.val_csv_path), '\n');
  for (size_t i = 1; i < lines.size() && images.size() < 8; ++i) {
    std::vector<std::string> fields = absl::StrSplit(lines[i], '\t');
    ASSERT_EQ(fields.size(), 2u) << lines[i];
    images.push_back(fields[0]);
    captions.push_back(fields[1]);
  }
  ASSERT_EQ(images.size(), 8u);
  const std::string texts_file = ScratchPath("python_captions.txt");
  {
    std::ofstream out(texts_file);
    for (const std::string& c : captions) out << c << "\n";
  }
  const std::string oclip_dir = ScratchPath("python_oclip_features");
  ASSERT_EQ(::mkdir(oclip_dir.c_str(), 0755), 0);
  std::vector<std::string> encode = {OCLIP_BINARY, "encode", "--model", f.config, "--pretrained",
                                     checkpoint, "--tokenizer",
                                     ReferencePath("bpe_simple_vocab_16e6.txt.gz"),
                                     "--texts-file", texts_file, "--output", oclip_dir};
  for (const std::string& image : images) {
    encode.push_back("--image");
    encode.push_back(image);
  }
  testing::CommandResult encoded = RunCommand(encode);
  ASSERT_EQ(encoded.exit_code, 0) << encoded.err;

  // The same inputs for Python, as oclip prepares them.
  auto config = ResolveModelConfig(f.config);
  ASSERT_TRUE(config.ok()) << config.status();
  PreprocessOptions preprocess;
  preprocess.image_size = config->vision.image_size;
  preprocess.mean = config->image_mean;
  preprocess.std = config->image_std;
  const int64_t s = preprocess.image_size;
  torch::Tensor pixels = torch::empty({8, 3, s, s});
  for (int64_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(PreprocessImageFile(images[i], preprocess, pixels[i].data_ptr<float>()).ok());
  }
  auto tokenizer = LoadTokenizer(*config, ReferencePath("bpe_simple_vocab_16e6.txt.gz"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<int64_t> ids = (*tokenizer)->Tokenize(captions);
  const std::vector<float> id_values(ids.begin(), ids.end());  // < 2^24: exact
  const std::string images_npy = ScratchPath("python_images.npy");
  const std::string tokens_npy = ScratchPath("python_tokens.npy");
  ASSERT_TRUE(WriteNpyFloat32(images_npy, {8, 3, s, s},
                              absl::MakeConstSpan(pixels.data_ptr<float>(), pixels.numel()))
                  .ok());
  ASSERT_TRUE(
      WriteNpyFloat32(tokens_npy, {8, (*tokenizer)->context_length()}, id_values).ok());

  const std::string python_dir = ScratchPath("python_features");
  testing::CommandResult python = RunCommand(
      {"/usr/bin/python3", std::string(OCLIP_SOURCE_DIR) + "/bench/python/encode_reference.py",
       "--encode", "--config", f.config, "--checkpoint", checkpoint, "--images", images_npy,
       "--tokens", tokens_npy, "--output", python_dir});
  ASSERT_EQ(python.exit_code, 0)
      << "Debian's python3-torch and python3-numpy (scripts/install-deps.sh) load the "
         "checkpoint strictly:\n"
      << python.out << python.err;
  for (const std::string name : {"image_features.npy", "text_features.npy"}) {
    const torch::Tensor ours = ReadFeatures(oclip_dir + "/" + name);
    const torch::Tensor theirs = ReadFeatures(python_dir + "/" + name);
    ASSERT_TRUE(ours.defined() && theirs.defined()) << name;
    ASSERT_EQ(ours.sizes(), theirs.sizes()) << name;
    ASSERT_EQ(ours.size(0), 8) << name;
    const double cosine = torch::cosine_similarity(ours, theirs, 1).min().item<double>();
    EXPECT_GE(cosine, 0.9999) << name;
    EXPECT_LT(((ours - theirs).norm() / theirs.norm()).item<double>(), 1e-4) << name;
  }
}

// --lock-text on the built-in text tower: every text parameter frozen but the
// LayerNorms (unless --lock-text-freeze-layer-norm); --lock-text-unlocked-layers
// n also leaves the last n blocks and what follows them (ln_final,
// text_projection) trainable. The image tower and logit_scale always train.
TEST(TrainE2eTest, LockTextFreezesTheTextTowerButWhatItLeavesUnlocked) {
  const std::string logs = ScratchPath("lock_text_logs");
  auto run = [&](const std::string& name, const std::vector<std::string>& extra) {
    return TrainOneEpoch(logs, name, extra);
  };
  const auto init = run("init", {});
  const auto locked = run("locked", {"--lock-text"});
  const auto all_frozen = run("all_frozen", {"--lock-text", "--lock-text-freeze-layer-norm"});
  const auto last = run("last", {"--lock-text", "--lock-text-unlocked-layers", "1"});
  ASSERT_FALSE(init.empty());
  int last_block = -1;
  for (const auto& [name, bytes] : init) {
    if (absl::StartsWith(name, "transformer.resblocks.")) {
      last_block = std::max(last_block, std::stoi(name.substr(std::strlen("transformer.resblocks."))));
    }
  }
  ASSERT_GE(last_block, 1) << "the fixture needs at least two text blocks";
  const std::string last_prefix = absl::StrCat("transformer.resblocks.", last_block, ".");
  for (const auto& [name, bytes] : init) {
    const bool text = !absl::StartsWith(name, "visual.") && name != "logit_scale";
    const bool layer_norm = absl::StrContains(name, ".ln_") || absl::StartsWith(name, "ln_final.");
    const bool after_last_unlocked = absl::StartsWith(name, last_prefix) ||
                                     absl::StartsWith(name, "ln_final.") ||
                                     name == "text_projection";
    EXPECT_EQ(locked.at(name) == bytes, text && !layer_norm) << name;
    EXPECT_EQ(all_frozen.at(name) == bytes, text) << name;
    EXPECT_EQ(last.at(name) == bytes, text && !layer_norm && !after_last_unlocked) << name;
  }
}

// The ResNet image tower in train mode: BatchNorm normalizes with batch
// statistics and updates its running ones once per forward (momentum 0.1),
// the loss falls, and the checkpoint (running statistics included) encodes.
TEST(TrainE2eTest, ResNetImageTowerTrainsWithBatchStatistics) {
  const std::string config = ScratchPath("tiny-rn-train.json");
  std::ofstream(config) << R"({
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "patch_size": null},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
  })";
  const std::string logs = ScratchPath("resnet_logs");
  const int kEpochs = 3;  // 16 steps each.
  auto run = [&](const std::string& name, const std::string& lr, int epochs) {
    // One thread: many small convolutions, where OpenMP's spinning threads
    // cost more than they give on a shared 2-core machine.
    std::vector<std::string> args = TrainArgs(logs, name, epochs, /*batch_size=*/32,
                                              /*threads=*/1);
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "--model") args[i + 1] = config;
      if (args[i] == "--lr") args[i + 1] = lr;
    }
    testing::CommandResult result = RunCommand(args);
    EXPECT_EQ(result.exit_code, 0) << result.command << "\n" << result.err;
    return logs + "/" + name;
  };
  const std::string still = run("still", "0", 1);
  const std::string trained = run("trained", "2e-3", kEpochs);

  const std::map<int64_t, double> curve = LossCurve(trained + "/out.log");
  ASSERT_EQ(curve.size(), 16u * kEpochs);
  const double start = Mean(curve, 0, 8), end = Mean(curve, curve.size() - 8, 8);
  EXPECT_LT(end, start - 0.3) << "start " << start << " end " << end;

  const std::string checkpoint =
      trained + "/checkpoints/epoch_" + std::to_string(kEpochs) + ".safetensors";
  const auto still_tensors = CheckpointTensors(still + "/checkpoints/epoch_1.safetensors");
  const auto trained_tensors = CheckpointTensors(checkpoint);
  for (const auto& [tensors, steps] :
       {std::pair{&still_tensors, 16}, std::pair{&trained_tensors, 16 * kEpochs}}) {
    ASSERT_EQ(tensors->count("visual.bn1.num_batches_tracked"), 1u);
    int64_t tracked = 0;
    std::memcpy(&tracked, tensors->at("visual.bn1.num_batches_tracked").data(), sizeof(tracked));
    EXPECT_EQ(tracked, steps);
  }
  // With lr 0 the weights stay as initialised, but the running statistics
  // (initialised to mean 0) still move: they are buffers, not parameters.
  const std::string& still_mean = still_tensors.at("visual.bn1.running_mean");
  EXPECT_NE(still_mean, std::string(still_mean.size(), '\0'));
  EXPECT_NE(still_tensors.at("visual.layer1.0.conv1.weight"),
            trained_tensors.at("visual.layer1.0.conv1.weight"));

  const testing::CommandResult encode =
      RunCommand({OCLIP_BINARY, "encode", "--model", config, "--pretrained", checkpoint,
                  "--image", ReferencePath("images/landscape.jpg"), "--output",
                  ScratchPath("resnet_encoded")});
  ASSERT_EQ(encode.exit_code, 0) << encode.command << "\n" << encode.err;
  const auto features = ReadNpyFloat32(ScratchPath("resnet_encoded/image_features.npy"));
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(features->shape, (std::vector<int64_t>{1, 32}));
  for (float v : features->values) EXPECT_TRUE(std::isfinite(v));
}

// A port that was free a moment ago (for the rendezvous store).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// ‖a − b‖ / ‖b‖ over every tensor of two model checkpoints.
double CheckpointDifference(const std::string& a_path, const std::string& b_path) {
  auto a = SafetensorsReader::Open(a_path);
  auto b = SafetensorsReader::Open(b_path);
  EXPECT_TRUE(a.ok() && b.ok());
  if (!a.ok() || !b.ok()) return INFINITY;
  EXPECT_EQ((*a)->names().size(), (*b)->names().size());
  double diff = 0, norm = 0;
  for (const std::string& name : (*b)->names()) {
    auto va = (*a)->Get(name);
    auto vb = (*b)->Get(name);
    if (!va.ok() || !vb.ok() || va->dtype != DType::kF32) continue;
    const float* x = reinterpret_cast<const float*>(va->data);
    const float* y = reinterpret_cast<const float*>(vb->data);
    for (int64_t i = 0; i < vb->num_elements(); ++i) {
      diff += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
      norm += double(y[i]) * y[i];
    }
  }
  return std::sqrt(diff / norm);
}

TEST(TrainE2eTest, TwoLaunchedRanksFollowOneProcess) {
  const std::string logs = ScratchPath("launch_logs");
  const int kEpochs = 2;
  // One process with the global batch of 32 ...
  testing::CommandResult one = RunCommand(TrainArgs(logs, "one", kEpochs, 32, 2));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const std::map<int64_t, double> reference = LossCurve(logs + "/one/out.log");
  ASSERT_EQ(reference.size(), 32u);
  // ... and two Gloo ranks with 16 each: rank r takes rows r, r+2, ... of each
  // epoch's permutation, so step i sees the same 32 samples (and crops).
  for (const std::vector<std::string>& loss_flags :
       {std::vector<std::string>{"--gather-with-grad"},
        std::vector<std::string>{"--local-loss", "--gather-with-grad"}}) {
    const std::string name = loss_flags.size() == 1 ? "two_global" : "two_local";
    std::vector<std::string> args = {OCLIP_BINARY, "launch",        "--nproc-per-node",
                                     "2",          "--master-port", std::to_string(FreePort()),
                                     "--"};
    const std::vector<std::string> train = With(TrainArgs(logs, name, kEpochs, 16, 1), loss_flags);
    args.insert(args.end(), train.begin(), train.end());
    testing::CommandResult two = RunCommand(args);
    ASSERT_EQ(two.exit_code, 0) << two.command << "\n" << two.err;
    if (name == "two_global") {
      // Rank 0 logs the loss over the gathered global batch.
      const std::map<int64_t, double> curve = LossCurve(logs + "/" + name + "/out.log");
      ASSERT_EQ(curve.size(), reference.size());
      EXPECT_NEAR(curve.at(0), reference.at(0), 1e-5 * reference.at(0));
      for (const auto& [step, loss] : curve) {
        EXPECT_NEAR(loss, reference.at(step), 1e-3 * reference.at(step)) << "step " << step;
      }
    }
    const std::string checkpoint = absl::StrCat("/checkpoints/epoch_", kEpochs, ".safetensors");
    EXPECT_LT(CheckpointDifference(logs + "/" + name + checkpoint, logs + "/one" + checkpoint),
              1e-3)
        << name;
  }
}

}  // namespace
}  // namespace oclip
