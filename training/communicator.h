// The collective operations training needs, behind one small interface so
// that the loss and the gradient synchronisation do not depend on c10d:
// distributed.h implements it over a c10d ProcessGroup (Gloo on CPU), and
// LocalCommunicator is the world of one process.
//
// Contract: every rank calls the same collectives in the same order with
// tensors of the same shapes and dtypes (as with torch.distributed). Tensors
// are contiguous and live on the communicator's device. Collectives block
// until done. Failures (a peer died, a timeout) throw c10::Error like
// LibTorch; the trainer catches them at its boundary.
//
// Thread-compatible: one thread uses a communicator at a time.

#ifndef OCLIP_TRAINING_COMMUNICATOR_H_
#define OCLIP_TRAINING_COMMUNICATOR_H_

#include <torch/torch.h>

#include <vector>

namespace oclip {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Every rank's `tensor`, in rank order (no autograd).
  virtual std::vector<torch::Tensor> AllGather(const torch::Tensor& tensor) = 0;
  // In place: each tensor becomes the element-wise sum over ranks.
  virtual void AllReduceSum(std::vector<torch::Tensor>& tensors) = 0;
  // In place: each tensor becomes rank `root`'s.
  virtual void Broadcast(std::vector<torch::Tensor>& tensors, int root) = 0;
  // Returns when every rank has called it.
  virtual void Barrier() = 0;
};

// A world of one: collectives are identities.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::vector<torch::Tensor> AllGather(const torch::Tensor& tensor) override { return {tensor}; }
  void AllReduceSum(std::vector<torch::Tensor>&) override {}
  void Broadcast(std::vector<torch::Tensor>&, int) override {}
  void Barrier() override {}
};

}  // namespace oclip

#endif  // OCLIP_TRAINING_COMMUNICATOR_H_
