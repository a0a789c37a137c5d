// The `oclip` executable: dispatches to one subcommand per job.

#include <cstdlib>
#include <cstring>
#include <iostream>

#include "absl/strings/numbers.h"
#include "cli/commands.h"
#include "model/caching_cpu_allocator.h"
#include "model/openblas_core.h"

namespace {

constexpr char kUsage[] =
    "usage: oclip COMMAND [flags]\n"
    "\n"
    "OpenCLIP in C++: the same embeddings from the same checkpoints.\n"
    "\n"
    "commands:\n"
    "  models    list the built-in model configs and their pretrained tags\n"
    "  fetch     download a released checkpoint and its tokenizer into the cache\n"
    "  encode    encode images into features (.npy)\n"
    "  classify  zero-shot labels for images\n"
    "  embed     batch-embed a dataset (webdataset, CSV, folder) into partitioned .npy files\n"
    "  index     build a FAISS index over embeddings, and search it (build|search)\n"
    "  serve     the gRPC inference server (batched encode, classify, health, metrics)\n"
    "  client    call a running server: encode-image, encode-text, classify, health, models\n"
    "  train     train a CLIP model (OpenCLIP's training flags; data-parallel over Gloo)\n"
    "  launch    run N local ranks of a distributed job with torchrun's environment\n"
    "  bench     measure preprocessing, encoding and serving throughput (JSON)\n"
    "\n"
    "Run `oclip COMMAND --help` for the flags of a command.\n";

struct Command {
  const char* name;
  int (*run)(int argc, char** argv);
};

constexpr Command kCommands[] = {
    {"models", oclip::cli::RunModels},
    {"fetch", oclip::cli::RunFetch},
    {"encode", oclip::cli::RunEncode},
    {"classify", oclip::cli::RunClassify},
    {"embed", oclip::cli::RunEmbed},
    {"serve", oclip::cli::RunServe},
    {"client", oclip::cli::RunClient},
    {"index", oclip::cli::RunIndex},
    {"train", oclip::cli::RunTrain},
    {"launch", oclip::cli::RunLaunch},
    {"bench", oclip::cli::RunBench},
};

// Freed activations are kept for the next batch instead of going back to the
// kernel (model/caching_cpu_allocator.h: 2x on ViT-B-32 under `oclip serve`'s
// malloc settings). OCLIP_CPU_CACHE_MB bounds the free memory kept (default
// 1024; 0 turns the cache off).
void InstallCpuCache() {
  constexpr size_t kDefaultMegabytes = 1024;
  size_t megabytes = kDefaultMegabytes;
  if (const char* value = std::getenv("OCLIP_CPU_CACHE_MB")) {
    if (!absl::SimpleAtoi(value, &megabytes)) {
      std::cerr << "oclip: ignoring OCLIP_CPU_CACHE_MB='" << value
                << "' (not a number of megabytes)\n";
      megabytes = kDefaultMegabytes;
    }
  }
  if (megabytes > 0) oclip::InstallCachingCpuAllocator(megabytes << 20);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  for (const Command& command : kCommands) {
    if (std::strcmp(argv[1], command.name) != 0) continue;
    // Before any BLAS call or thread: LibTorch's fp32 BLAS calls on OpenBLAS's
    // AVX-512 kernels where it fell back to SSE3 ones for a CPU it does not
    // know (model/openblas_core.h; `oclip bench encode` reports the choice).
    oclip::SelectOpenBlasCore();
    InstallCpuCache();
    return command.run(argc - 2, argv + 2);
  }
  std::cerr << "oclip: unknown command '" << argv[1] << "'\n\n" << kUsage;
  return 2;
}
