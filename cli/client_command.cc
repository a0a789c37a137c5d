// `oclip client`: calls a running `oclip serve` for humans and scripts.
//
//   oclip client encode-image --image F... [--normalize] [--output DIR]
//   oclip client encode-text  --text S... [--texts-file F] [--normalize] [--output DIR]
//   oclip client classify     --image F... --label L... [--template T]... [--top-k K] [--json]
//   oclip client search       --index NAME (--text S | --image F | --embedding F.npy [--row R])
//                             [--k K]
//   oclip client health       [--service NAME] [--wait]
//   oclip client models
//
// encode-* write DIR/image_features.npy / DIR/text_features.npy exactly as
// `oclip encode` does, so the two can be compared file to file.

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cli/client_flags.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/mapped_file.h"
#include "core/npy.h"
#include "core/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "oclip/v1/clip.grpc.pb.h"
#include "server/grpc_util.h"

namespace oclip::cli {
namespace {

struct ClientCommandFlags {
  ClientFlags client;
  std::string model;
  std::vector<std::string> images;
  std::vector<std::string> texts;
  std::string texts_file;
  std::vector<std::string> labels;
  std::vector<std::string> templates;
  int64_t top_k = 5;
  bool normalize = false;
  bool json = false;
  std::string output;
  std::string service;
  bool wait = false;
  std::string index;
  std::string embedding;
  int64_t row = 0;
  int64_t k = 10;
};

absl::Status CallError(const char* rpc, const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(rpc, ": ", StatusCodeName(static_cast<absl::StatusCode>(
                                                  status.error_code())),
                                   ": ", status.error_message()));
}

absl::Status WriteFeatures(const v1::EncodeResponse& response, const std::string& output,
                           const std::string& file_name) {
  const int64_t n = response.embeddings_size(), dim = response.dim();
  std::vector<float> rows;
  rows.reserve(n * dim);
  for (const v1::Embedding& embedding : response.embeddings()) {
    if (embedding.values_size() != dim) {
      return absl::DataLossError("the server sent an embedding of the wrong length");
    }
    rows.insert(rows.end(), embedding.values().begin(), embedding.values().end());
  }
  std::cout << "model " << response.model() << ": " << n << " embeddings of dimension " << dim
            << "\n";
  if (output.empty()) return absl::OkStatus();
  if (::mkdir(output.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create --output ", output));
  }
  const std::string path = absl::StrCat(output, "/", file_name);
  OCLIP_RETURN_IF_ERROR(WriteNpyFloat32(path, {n, dim}, rows));
  std::cout << "wrote " << path << " [" << n << ", " << dim << "]\n";
  return absl::OkStatus();
}

absl::Status AddImages(const std::vector<std::string>& paths,
                       google::protobuf::RepeatedPtrField<v1::ImageInput>* images) {
  if (paths.empty()) return absl::InvalidArgumentError("give at least one --image");
  for (const std::string& path : paths) {
    OCLIP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
    images->Add()->set_data(std::move(bytes));
  }
  return absl::OkStatus();
}

absl::Status EncodeImage(const ClientCommandFlags& flags, v1::Clip::Stub& stub) {
  v1::EncodeImageRequest request;
  request.set_model(flags.model);
  request.set_normalize(flags.normalize);
  OCLIP_RETURN_IF_ERROR(AddImages(flags.images, request.mutable_images()));
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<grpc::ClientContext> context, flags.client.NewContext());
  v1::EncodeResponse response;
  grpc::Status status = stub.EncodeImage(context.get(), request, &response);
  if (!status.ok()) return CallError("EncodeImage", status);
  return WriteFeatures(response, flags.output, "image_features.npy");
}

absl::Status EncodeText(const ClientCommandFlags& flags, v1::Clip::Stub& stub) {
  v1::EncodeTextRequest request;
  request.set_model(flags.model);
  request.set_normalize(flags.normalize);
  OCLIP_ASSIGN_OR_RETURN(std::vector<std::string> texts,
                         CollectTexts(flags.texts, flags.texts_file));
  if (texts.empty()) return absl::InvalidArgumentError("give --text or --texts-file");
  for (std::string& text : texts) request.add_texts(std::move(text));
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<grpc::ClientContext> context, flags.client.NewContext());
  v1::EncodeResponse response;
  grpc::Status status = stub.EncodeText(context.get(), request, &response);
  if (!status.ok()) return CallError("EncodeText", status);
  return WriteFeatures(response, flags.output, "text_features.npy");
}

absl::Status Classify(const ClientCommandFlags& flags, v1::Clip::Stub& stub) {
  v1::ClassifyRequest request;
  request.set_model(flags.model);
  request.set_top_k(static_cast<int32_t>(flags.top_k));
  OCLIP_RETURN_IF_ERROR(AddImages(flags.images, request.mutable_images()));
  for (const std::string& label : flags.labels) request.add_labels(label);
  for (const std::string& prompt_template : flags.templates) request.add_templates(prompt_template);
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<grpc::ClientContext> context, flags.client.NewContext());
  v1::ClassifyResponse response;
  grpc::Status status = stub.Classify(context.get(), request, &response);
  if (!status.ok()) return CallError("Classify", status);
  nlohmann::json results = nlohmann::json::array();
  for (int i = 0; i < response.classifications_size(); ++i) {
    nlohmann::json labels = nlohmann::json::array();
    if (!flags.json) std::cout << flags.images[i] << "\n";
    for (const v1::LabelScore& score : response.classifications(i).labels()) {
      labels.push_back({{"label", score.label()}, {"probability", score.probability()}});
      if (!flags.json) std::cout << "  " << score.probability() << "  " << score.label() << "\n";
    }
    results.push_back({{"image", flags.images[i]}, {"labels", labels}});
  }
  if (flags.json) std::cout << results.dump(2) << "\n";
  return absl::OkStatus();
}

// The query of `client search`: exactly one of --text, --image, --embedding.
absl::Status SetSearchQuery(const ClientCommandFlags& flags, v1::SearchRequest* request) {
  const int given = static_cast<int>(!flags.texts.empty()) +
                    static_cast<int>(!flags.images.empty()) +
                    static_cast<int>(!flags.embedding.empty());
  if (given != 1 || flags.texts.size() > 1 || flags.images.size() > 1) {
    return absl::InvalidArgumentError("give one query: --text, --image or --embedding");
  }
  if (!flags.texts.empty()) {
    request->set_text(flags.texts[0]);
  } else if (!flags.images.empty()) {
    OCLIP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(flags.images[0]));
    request->mutable_image()->set_data(std::move(bytes));
  } else {
    OCLIP_ASSIGN_OR_RETURN(NpyFloat32 array, ReadNpyFloat32(flags.embedding));
    const int64_t rows = array.shape.size() == 2 ? array.shape[0] : 1;
    if (array.shape.empty() || array.shape.size() > 2 || flags.row < 0 || flags.row >= rows) {
      return absl::InvalidArgumentError(absl::StrCat(
          flags.embedding, ": expected a [dim] or [rows, dim] array with row ", flags.row));
    }
    const int64_t dim = array.shape.back();
    request->mutable_embedding()->mutable_values()->Add(
        array.values.begin() + flags.row * dim, array.values.begin() + (flags.row + 1) * dim);
  }
  return absl::OkStatus();
}

absl::Status Search(const ClientCommandFlags& flags, v1::Clip::Stub& stub) {
  v1::SearchRequest request;
  request.set_index(flags.index);
  request.set_k(static_cast<int32_t>(flags.k));
  OCLIP_RETURN_IF_ERROR(SetSearchQuery(flags, &request));
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<grpc::ClientContext> context, flags.client.NewContext());
  v1::SearchResponse response;
  grpc::Status status = stub.Search(context.get(), request, &response);
  if (!status.ok()) return CallError("Search", status);
  nlohmann::json hits = nlohmann::json::array();
  for (const v1::SearchHit& hit : response.hits()) {
    hits.push_back({{"id", hit.id()},
                    {"score", hit.score()},
                    {"key", hit.key()},
                    {"caption", hit.caption()},
                    {"url", hit.url()},
                    {"partition", hit.partition()},
                    {"row", hit.row()}});
  }
  std::cout << nlohmann::json{{"index", response.index()}, {"model", response.model()},
                              {"hits", hits}}
                   .dump(2)
            << "\n";
  return absl::OkStatus();
}

absl::Status ListModels(const ClientCommandFlags& flags, v1::Clip::Stub& stub) {
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<grpc::ClientContext> context, flags.client.NewContext());
  v1::ListModelsResponse response;
  grpc::Status status = stub.ListModels(context.get(), v1::ListModelsRequest(), &response);
  if (!status.ok()) return CallError("ListModels", status);
  nlohmann::json models = nlohmann::json::array();
  for (const v1::ModelInfo& info : response.models()) {
    models.push_back({{"name", info.name()},
                      {"architecture", info.architecture()},
                      {"pretrained", info.pretrained()},
                      {"embed_dim", info.embed_dim()},
                      {"image_size", info.image_size()},
                      {"context_length", info.context_length()},
                      {"devices", std::vector<std::string>(info.devices().begin(),
                                                           info.devices().end())},
                      {"precision", info.precision()},
                      {"max_batch_size", info.max_batch_size()},
                      {"ready", info.ready()},
                      {"default", info.is_default()}});
  }
  std::cout << models.dump(2) << "\n";
  return absl::OkStatus();
}

// Prints the serving status; with --wait, watches until SERVING (or the
// deadline). Exit status: OK only when SERVING.
absl::Status Health(const ClientCommandFlags& flags, const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(flags.service);
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<grpc::ClientContext> context, flags.client.NewContext());
  grpc::health::v1::HealthCheckResponse response;
  if (flags.wait) {
    context->set_wait_for_ready(true);
    auto reader = stub->Watch(context.get(), request);
    while (reader->Read(&response)) {
      if (response.status() == grpc::health::v1::HealthCheckResponse::SERVING) break;
    }
    context->TryCancel();
    reader->Finish();
  } else {
    grpc::Status status = stub->Check(context.get(), request, &response);
    if (!status.ok()) return CallError("Health.Check", status);
  }
  const std::string name =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  std::cout << name << "\n";
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat("service '", flags.service, "' is ", name));
  }
  return absl::OkStatus();
}

constexpr char kUsage[] =
    "usage: oclip client SUBCOMMAND [flags]\n"
    "\n"
    "Calls a running `oclip serve`.\n"
    "\n"
    "subcommands:\n"
    "  encode-image  image embeddings (writes --output/image_features.npy)\n"
    "  encode-text   text embeddings (writes --output/text_features.npy)\n"
    "  classify      zero-shot labels for images\n"
    "  search        nearest neighbours in a served index, by text, image or embedding (JSON)\n"
    "  health        the server's (or --service's) health; exit 0 when SERVING\n"
    "  models        the models the server has (JSON)\n";

}  // namespace

int RunClient(int argc, char** argv) {
  if (argc < 1 || std::strcmp(argv[0], "--help") == 0 || std::strcmp(argv[0], "-h") == 0) {
    std::cout << kUsage;
    return argc < 1 ? 2 : 0;
  }
  const std::string subcommand = argv[0];
  ClientCommandFlags values;
  FlagSet flags(absl::StrCat("client ", subcommand), "Calls a running `oclip serve`.");
  values.client.Register(flags);
  if (subcommand == "encode-image" || subcommand == "encode-text" || subcommand == "classify") {
    flags.AddString("model", &values.model, "model name on the server (default model if empty)");
  }
  if (subcommand == "encode-image" || subcommand == "classify") {
    flags.AddRepeated("image", &values.images, "image file");
  }
  if (subcommand == "search") {
    flags.AddString("index", &values.index, "index name on the server");
    flags.AddRepeated("text", &values.texts, "text query");
    flags.AddRepeated("image", &values.images, "image query (a file)");
    flags.AddString("embedding", &values.embedding, "embedding query: a .npy file ([dim] or [rows, dim])");
    flags.AddInt("row", &values.row, "the row of --embedding to search with (0)");
    flags.AddInt("k", &values.k, "hits (10)");
  }
  if (subcommand == "encode-image" || subcommand == "encode-text") {
    flags.AddBool("normalize", &values.normalize, "L2-normalize the embeddings");
    flags.AddString("output", &values.output, "directory for the .npy file");
  }
  if (subcommand == "encode-text") {
    flags.AddRepeated("text", &values.texts, "text to encode");
    flags.AddString("texts-file", &values.texts_file, "file with one text per line");
  } else if (subcommand == "classify") {
    flags.AddRepeated("label", &values.labels, "class name");
    flags.AddRepeated("template", &values.templates, "prompt template with {} (default: server's)");
    flags.AddInt("top-k", &values.top_k, "labels per image (5; 0 = all)");
    flags.AddBool("json", &values.json, "print JSON");
  } else if (subcommand == "health") {
    flags.AddString("service", &values.service, "a model name (default: the whole server)");
    flags.AddBool("wait", &values.wait, "wait until SERVING (up to --timeout)");
  } else if (subcommand != "encode-image" && subcommand != "models" && subcommand != "search") {
    std::cerr << "oclip client: unknown subcommand '" << subcommand << "'\n\n" << kUsage;
    return 2;
  }
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc - 1, argv + 1)) return *exit_code;

  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = values.client.Connect();
  absl::Status status = channel.status();
  if (status.ok()) {
    auto stub = v1::Clip::NewStub(*channel);
    if (subcommand == "encode-image") status = EncodeImage(values, *stub);
    if (subcommand == "encode-text") status = EncodeText(values, *stub);
    if (subcommand == "classify") status = Classify(values, *stub);
    if (subcommand == "search") status = Search(values, *stub);
    if (subcommand == "models") status = ListModels(values, *stub);
    if (subcommand == "health") status = Health(values, *channel);
  }
  if (!status.ok()) {
    std::cerr << "oclip client " << subcommand << ": " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
