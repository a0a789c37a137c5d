#include "training/distributed.h"

#include <cstdlib>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace oclip {
namespace {

// The first variable of `names` that is set, or null.
const char* FirstSet(const std::function<const char*(const char*)>& getenv,
                     std::initializer_list<const char*> names, const char** which) {
  for (const char* name : names) {
    const char* value = getenv(name);
    if (value != nullptr && value[0] != '\0') {
      *which = name;
      return value;
    }
  }
  return nullptr;
}

absl::Status ParseInt(const char* name, const char* value, int min, int* out) {
  if (value == nullptr) return absl::OkStatus();
  int parsed;
  if (!absl::SimpleAtoi(value, &parsed) || parsed < min) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", name, "='", value, "' is not an integer >= ", min));
  }
  *out = parsed;
  return absl::OkStatus();
}

absl::Status ParseFirst(const std::function<const char*(const char*)>& getenv,
                        std::initializer_list<const char*> names, int min, int* out) {
  const char* which = "";
  const char* value = FirstSet(getenv, names, &which);
  return ParseInt(which, value, min, out);
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

absl::StatusOr<DistributedEnv> DetectDistributedEnv(
    const std::function<const char*(const char*)>& getenv_or_null) {
  const std::function<const char*(const char*)> getenv =
      getenv_or_null ? getenv_or_null : [](const char* name) { return std::getenv(name); };
  DistributedEnv env;
  int world = 1, slurm_tasks = 1;
  OCLIP_RETURN_IF_ERROR(ParseFirst(getenv, {"WORLD_SIZE"}, 1, &world));
  OCLIP_RETURN_IF_ERROR(ParseFirst(getenv, {"SLURM_NTASKS"}, 1, &slurm_tasks));
  env.distributed = world > 1 || slurm_tasks > 1;
  if (!env.distributed) return env;
  const char* procid = getenv("SLURM_PROCID");
  if (procid != nullptr && procid[0] != '\0') {
    OCLIP_RETURN_IF_ERROR(ParseFirst(
        getenv, {"LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"}, 0,
        &env.local_rank));
    OCLIP_RETURN_IF_ERROR(ParseFirst(
        getenv, {"RANK", "PMI_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"}, 0, &env.rank));
    OCLIP_RETURN_IF_ERROR(
        ParseFirst(getenv, {"WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"}, 1,
                   &env.world_size));
  } else {
    env.world_size = world;
    OCLIP_RETURN_IF_ERROR(ParseFirst(getenv, {"RANK"}, 0, &env.rank));
    OCLIP_RETURN_IF_ERROR(ParseFirst(getenv, {"LOCAL_RANK"}, 0, &env.local_rank));
  }
  if (env.rank >= env.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", env.rank, " is not below the world size ", env.world_size));
  }
  const char* addr = getenv("MASTER_ADDR");
  if (addr != nullptr && addr[0] != '\0') env.master_addr = addr;
  OCLIP_RETURN_IF_ERROR(ParseFirst(getenv, {"MASTER_PORT"}, 1, &env.master_port));
  if (env.master_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("MASTER_PORT ", env.master_port, " > 65535"));
  }
  return env;
}

absl::StatusOr<c10::intrusive_ptr<c10d::Store>> ConnectStore(const StoreOptions& options) {
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(options.port);
  store_options.isServer = options.is_server;
  store_options.numWorkers = options.world_size;
  store_options.waitWorkers = false;
  store_options.timeout = options.timeout;
  try {
    return c10::intrusive_ptr<c10d::Store>(
        c10::make_intrusive<c10d::TCPStore>(options.host, store_options));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot ", options.is_server ? "serve" : "reach",
                                               " the rendezvous store at ", options.host, ":",
                                               options.port, ": ", e.what()));
  }
}

int StorePort(const c10d::Store& store) {
  const auto* tcp = dynamic_cast<const c10d::TCPStore*>(&store);
  return tcp != nullptr ? tcp->getPort() : 0;
}

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size, const std::string& host,
    std::chrono::milliseconds timeout) {
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
    if (interface != nullptr && interface[0] != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else if (IsLoopback(host)) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = 2;
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options);
    return std::unique_ptr<GlooCommunicator>(
        new GlooCommunicator(std::move(group), rank, world_size));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", rank, " of ", world_size,
                                               ": cannot form the Gloo process group: ", e.what()));
  }
}

std::vector<torch::Tensor> GlooCommunicator::AllGather(const torch::Tensor& tensor) {
  std::vector<torch::Tensor> input = {tensor.contiguous()};
  std::vector<std::vector<torch::Tensor>> output(1);
  for (int i = 0; i < world_size_; ++i) output[0].push_back(torch::empty_like(input[0]));
  group_->allgather(output, input)->wait();
  return output[0];
}

void GlooCommunicator::AllReduceSum(std::vector<torch::Tensor>& tensors) {
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::SUM;
  group_->allreduce(tensors, options)->wait();
}

void GlooCommunicator::Broadcast(std::vector<torch::Tensor>& tensors, int root) {
  for (torch::Tensor& tensor : tensors) {
    std::vector<torch::Tensor> one = {tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    group_->broadcast(one, options)->wait();
  }
}

void GlooCommunicator::Barrier() { group_->barrier()->wait(); }

absl::StatusOr<std::unique_ptr<GlooCommunicator>> ConnectGloo(const DistributedEnv& env) {
  StoreOptions store_options;
  store_options.host = env.master_addr;
  store_options.port = env.master_port;
  store_options.is_server = env.rank == 0;
  store_options.world_size = env.world_size;
  OCLIP_ASSIGN_OR_RETURN(auto store, ConnectStore(store_options));
  return GlooCommunicator::Create(store, env.rank, env.world_size, env.master_addr);
}

void BroadcastModule(torch::nn::Module& module, Communicator& communicator, int root) {
  if (communicator.world_size() <= 1) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  for (const auto& p : module.parameters()) tensors.push_back(p.data());
  for (const auto& b : module.buffers()) tensors.push_back(b);
  // Gloo broadcasts contiguous tensors in place; parameters are contiguous.
  communicator.Broadcast(tensors, root);
}

void AverageGradients(const std::vector<torch::Tensor>& parameters, Communicator& communicator,
                      int64_t bucket_bytes) {
  const int world = communicator.world_size();
  if (world <= 1) return;
  torch::NoGradGuard no_grad;
  const int64_t bucket_elements = std::max<int64_t>(1, bucket_bytes / 4);
  size_t begin = 0;
  while (begin < parameters.size()) {
    // One bucket: consecutive parameters up to the size limit (at least one).
    size_t end = begin;
    int64_t elements = 0;
    while (end < parameters.size() &&
           (end == begin || elements + parameters[end].numel() <= bucket_elements)) {
      elements += parameters[end].numel();
      ++end;
    }
    std::vector<torch::Tensor> flat_parts;
    for (size_t i = begin; i < end; ++i) {
      const torch::Tensor& p = parameters[i];
      flat_parts.push_back(p.grad().defined()
                               ? p.grad().reshape(-1).to(torch::kFloat)
                               : torch::zeros({p.numel()}, p.options().dtype(torch::kFloat)));
    }
    std::vector<torch::Tensor> bucket = {torch::cat(flat_parts)};
    communicator.AllReduceSum(bucket);
    bucket[0].div_(world);
    int64_t offset = 0;
    for (size_t i = begin; i < end; ++i) {
      torch::Tensor p = parameters[i];
      torch::Tensor averaged = bucket[0].narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      if (p.grad().defined()) {
        p.mutable_grad().copy_(averaged);
      } else {
        p.mutable_grad() = averaged.to(p.scalar_type()).clone();
      }
    }
    begin = end;
  }
}

}  // namespace oclip
