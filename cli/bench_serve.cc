// `oclip bench serve`: a load generator for a running `oclip serve`.
//
// N streams (threads, each with one call in flight) send EncodeImage (or
// EncodeText) requests of K items for a fixed time; the result is one JSON
// line with items/s and the latency distribution of successful calls. One
// stream with one item measures what an idle server adds to a single
// image's model time; many streams saturate the batcher.

#include <algorithm>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/client_flags.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "core/download.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "oclip/v1/clip.grpc.pb.h"

namespace oclip::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct StreamResult {
  std::vector<double> latencies_ms;  // Successful calls after the warm-up.
  int64_t errors = 0;
  std::string last_error;
};

double Percentile(std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t index =
      std::min(sorted.size() - 1, static_cast<size_t>(p / 100.0 * (sorted.size() - 1) + 0.5));
  return sorted[index];
}

struct BenchServeFlags {
  ClientFlags client;
  std::string kind = "image";
  std::string image;
  std::string text = "a photo of a dog running on the beach";
  std::string model;
  int64_t streams = 4;
  int64_t items = 1;
  int64_t seconds = 10;
  int64_t warmup_calls = 2;
  std::string metrics_address;
};

// The server's own account of where time goes: sum and count of the
// oclip_stage_duration_seconds histogram per stage ("model" per batch,
// "preprocess" and "queue" per item), over all models.
struct StageTime {
  double seconds = 0;
  double count = 0;
};
struct ServerTimes {
  StageTime model, preprocess;
};

absl::StatusOr<ServerTimes> ScrapeServerTimes(const std::string& metrics_address) {
  OCLIP_ASSIGN_OR_RETURN(std::string page,
                         FetchUrl(absl::StrCat("http://", metrics_address, "/metrics")));
  ServerTimes times;
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    StageTime* stage = absl::StrContains(line, "stage=\"model\"")        ? &times.model
                       : absl::StrContains(line, "stage=\"preprocess\"") ? &times.preprocess
                                                                          : nullptr;
    const size_t space = line.rfind(' ');
    double value = 0;
    if (stage == nullptr || space == absl::string_view::npos ||
        !absl::SimpleAtod(line.substr(space + 1), &value)) {
      continue;
    }
    if (absl::StartsWith(line, "oclip_stage_duration_seconds_sum{")) stage->seconds += value;
    if (absl::StartsWith(line, "oclip_stage_duration_seconds_count{")) stage->count += value;
  }
  return times;
}

// Mean milliseconds of the observations between two scrapes.
double MeanMs(const StageTime& before, const StageTime& after) {
  const double count = after.count - before.count;
  return count > 0 ? (after.seconds - before.seconds) / count * 1000.0 : 0.0;
}

absl::Status BenchServe(const BenchServeFlags& flags) {
  if (flags.kind != "image" && flags.kind != "text") {
    return absl::InvalidArgumentError("--kind must be image or text");
  }
  if (flags.streams < 1 || flags.items < 1) {
    return absl::InvalidArgumentError("--streams and --items must be >= 1");
  }
  v1::EncodeImageRequest image_request;
  v1::EncodeTextRequest text_request;
  if (flags.kind == "image") {
    if (flags.image.empty()) return absl::InvalidArgumentError("--image is required");
    OCLIP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(flags.image));
    for (int64_t i = 0; i < flags.items; ++i) image_request.add_images()->set_data(bytes);
    image_request.set_model(flags.model);
  } else {
    for (int64_t i = 0; i < flags.items; ++i) text_request.add_texts(flags.text);
    text_request.set_model(flags.model);
  }
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, flags.client.Connect());
  // Fail fast on a wrong address or credentials, before the clock starts.
  OCLIP_RETURN_IF_ERROR(flags.client.NewContext().status());

  ServerTimes before;
  if (!flags.metrics_address.empty()) {
    OCLIP_ASSIGN_OR_RETURN(before, ScrapeServerTimes(flags.metrics_address));
  }
  std::vector<StreamResult> results(flags.streams);
  const auto end = Clock::now() + std::chrono::seconds(flags.seconds);
  auto run_stream = [&](int index) {
    auto stub = v1::Clip::NewStub(channel);
    StreamResult& result = results[index];
    int64_t calls = 0;
    while (Clock::now() < end) {
      absl::StatusOr<std::unique_ptr<grpc::ClientContext>> context = flags.client.NewContext();
      if (!context.ok()) return;
      v1::EncodeResponse response;
      const auto start = Clock::now();
      grpc::Status status = flags.kind == "image"
                                ? stub->EncodeImage(context->get(), image_request, &response)
                                : stub->EncodeText(context->get(), text_request, &response);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (!status.ok()) {
        ++result.errors;
        result.last_error = status.error_message();
        continue;
      }
      if (++calls > flags.warmup_calls) result.latencies_ms.push_back(ms);
    }
  };
  const auto start = Clock::now();
  std::vector<std::thread> streams;
  for (int i = 0; i < flags.streams; ++i) streams.emplace_back(run_stream, i);
  for (std::thread& stream : streams) stream.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();

  std::vector<double> latencies;
  int64_t errors = 0;
  std::string last_error;
  double busy_ms = 0;
  for (StreamResult& result : results) {
    latencies.insert(latencies.end(), result.latencies_ms.begin(), result.latencies_ms.end());
    errors += result.errors;
    if (!result.last_error.empty()) last_error = result.last_error;
  }
  for (double ms : latencies) busy_ms += ms;
  std::sort(latencies.begin(), latencies.end());
  // Items per second while the streams were measuring: each stream keeps
  // exactly one call in flight, so the sum of call times per stream is that
  // stream's measuring time.
  const double measured_seconds = busy_ms / 1000.0 / static_cast<double>(flags.streams);
  const double items_per_second =
      measured_seconds > 0 ? latencies.size() * flags.items / measured_seconds : 0;
  nlohmann::json json = {{"benchmark", "serve"},
                         {"address", flags.client.address},
                         {"kind", flags.kind},
                         {"streams", flags.streams},
                         {"items_per_request", flags.items},
                         {"calls", latencies.size()},
                         {"errors", errors},
                         {"seconds", elapsed},
                         {"items_per_second", items_per_second},
                         {"latency_ms_p50", Percentile(latencies, 50)},
                         {"latency_ms_p90", Percentile(latencies, 90)},
                         {"latency_ms_p99", Percentile(latencies, 99)},
                         {"latency_ms_min", latencies.empty() ? 0 : latencies.front()}};
  if (!last_error.empty()) json["last_error"] = last_error;
  if (!flags.metrics_address.empty() && !latencies.empty()) {
    // With one stream of one item, the mean latency minus the mean model
    // time per batch is what the server adds to a single image's model time:
    // decode and preprocessing (which offline encoding pays too), then
    // gRPC, queueing and the response.
    OCLIP_ASSIGN_OR_RETURN(ServerTimes after, ScrapeServerTimes(flags.metrics_address));
    const double model_ms = MeanMs(before.model, after.model);
    const double preprocess_ms = MeanMs(before.preprocess, after.preprocess) * flags.items;
    const double mean_ms = busy_ms / static_cast<double>(latencies.size());
    json["server_batches"] = after.model.count - before.model.count;
    json["server_model_ms_mean"] = model_ms;
    json["server_preprocess_ms_per_call"] = preprocess_ms;
    json["latency_ms_mean"] = mean_ms;
    json["added_ms_mean"] = mean_ms - model_ms;
    json["added_ms_mean_without_preprocess"] = mean_ms - model_ms - preprocess_ms;
  }
  std::cout << json.dump() << "\n";
  if (latencies.empty()) {
    return absl::UnavailableError(absl::StrCat("no call succeeded: ", last_error));
  }
  return absl::OkStatus();
}

}  // namespace

int RunBenchServe(int argc, char** argv) {
  BenchServeFlags values;
  FlagSet flags("bench serve",
                "Load generator for a running `oclip serve`: --streams concurrent calls of\n"
                "--items images (or texts) each, for --seconds; prints items/s and latency\n"
                "percentiles as JSON.");
  values.client.Register(flags);
  flags.AddString("kind", &values.kind, "image (default) or text");
  flags.AddString("image", &values.image, "image file sent in every request (--kind image)");
  flags.AddString("text", &values.text, "text sent in every request (--kind text)");
  flags.AddString("model", &values.model, "model name (default: the server's default)");
  flags.AddInt("streams", &values.streams, "concurrent calls (4)");
  flags.AddInt("items", &values.items, "images or texts per call (1)");
  flags.AddInt("seconds", &values.seconds, "how long to send (10)");
  flags.AddInt("warmup-calls", &values.warmup_calls, "calls per stream left out of the figures (2)");
  flags.AddString("metrics-address", &values.metrics_address,
                  "the server's metrics HOST:PORT: also report its model time per batch and "
                  "what the server adds to it");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  if (absl::Status status = BenchServe(values); !status.ok()) {
    std::cerr << "oclip bench serve: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
