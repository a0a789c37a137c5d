// Data-parallel plumbing for training on LibTorch's c10d (LibTorch has no
// DDP wrapper): where this process sits in the job (torchrun or SLURM
// environment, as OpenCLIP's init_distributed_device reads it), a c10d
// TCPStore rendezvous, a Communicator over ProcessGroupGloo, and what DDP
// would do around backward: parameters broadcast from rank 0 at start and
// gradients all-reduced in buckets and averaged over ranks after backward.
//
// Errors: DetectDistributedEnv returns INVALID_ARGUMENT for malformed
// variables; the connect functions return UNAVAILABLE when the rendezvous
// fails or times out. The helpers that run collectives throw c10::Error like
// LibTorch (the trainer catches them). Thread-compatible.

#ifndef OCLIP_TRAINING_DISTRIBUTED_H_
#define OCLIP_TRAINING_DISTRIBUTED_H_

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

#include "absl/status/statusor.h"
#include "training/communicator.h"

namespace oclip {

struct DistributedEnv {
  bool distributed = false;  // world_size > 1
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// OpenCLIP's rules: distributed iff WORLD_SIZE > 1, else SLURM_NTASKS > 1.
// Under SLURM (SLURM_PROCID set) rank/world/local rank come from the first
// set of RANK|PMI_RANK|SLURM_PROCID|OMPI_COMM_WORLD_RANK,
// WORLD_SIZE|PMI_SIZE|SLURM_NTASKS|OMPI_COMM_WORLD_SIZE and
// LOCAL_RANK|MPI_LOCALRANKID|SLURM_LOCALID|OMPI_COMM_WORLD_LOCAL_RANK;
// otherwise (torchrun) from RANK, WORLD_SIZE, LOCAL_RANK. MASTER_ADDR and
// MASTER_PORT (defaults 127.0.0.1:29500) name the rendezvous. `getenv`
// defaults to the process environment.
absl::StatusOr<DistributedEnv> DetectDistributedEnv(
    const std::function<const char*(const char*)>& getenv = nullptr);

struct StoreOptions {
  std::string host = "127.0.0.1";
  int port = 29500;  // 0 on the server: pick a free port (see StorePort).
  bool is_server = false;
  int world_size = 1;
  // Long enough for the master's evaluation, which the other ranks wait for.
  std::chrono::milliseconds timeout = std::chrono::minutes(30);
};

// A c10d TCPStore client or server (the server does not wait for clients).
absl::StatusOr<c10::intrusive_ptr<c10d::Store>> ConnectStore(const StoreOptions& options);
// The port a TCPStore listens on or connects to.
int StorePort(const c10d::Store& store);

// A Communicator over c10d::ProcessGroupGloo. Collectives on float tensors
// of any dtype; CPU tensors.
class GlooCommunicator final : public Communicator {
 public:
  // Blocks until all `world_size` ranks joined through `store`. The Gloo
  // transport binds to GLOO_SOCKET_IFNAME when set, to 127.0.0.1 when
  // `host` is a loopback address, else to the machine's hostname.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(
      const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size,
      const std::string& host = "127.0.0.1",
      std::chrono::milliseconds timeout = std::chrono::minutes(30));

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::vector<torch::Tensor> AllGather(const torch::Tensor& tensor) override;
  void AllReduceSum(std::vector<torch::Tensor>& tensors) override;
  void Broadcast(std::vector<torch::Tensor>& tensors, int root) override;
  void Barrier() override;

 private:
  GlooCommunicator(c10::intrusive_ptr<c10d::ProcessGroup> group, int rank, int world_size)
      : group_(std::move(group)), rank_(rank), world_size_(world_size) {}

  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  int rank_;
  int world_size_;
};

// Rank 0 serves the store at env.master_addr:master_port; all ranks join.
absl::StatusOr<std::unique_ptr<GlooCommunicator>> ConnectGloo(const DistributedEnv& env);

// Every parameter and buffer of `module` becomes rank `root`'s (DDP does
// this when it wraps a model).
void BroadcastModule(torch::nn::Module& module, Communicator& communicator, int root = 0);

// DDP's gradient synchronisation: the gradients of `parameters` are summed
// over ranks in flat float32 buckets of at most `bucket_bytes` and divided by
// the world size. A parameter without a gradient takes part with zeros (and
// then has a zero gradient), so that all ranks reduce the same buckets.
void AverageGradients(const std::vector<torch::Tensor>& parameters, Communicator& communicator,
                      int64_t bucket_bytes = 25 << 20);

}  // namespace oclip

#endif  // OCLIP_TRAINING_DISTRIBUTED_H_
