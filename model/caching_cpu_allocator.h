// A CPU allocator for LibTorch that keeps freed large blocks for reuse, as
// PyTorch's CUDA caching allocator does on the GPU.
//
// Why: every op of a forward pass allocates its output afresh. glibc serves
// blocks above its mmap threshold with mmap and returns them with munmap, so a
// batch's activations (megabytes each) are page-faulted in and zeroed by the
// kernel on every op. Measured on ViT-B-32 int8, batch 32, 2 threads: with the
// threshold fixed at 128 KiB (as `oclip serve` keeps it, for a flat RSS) the
// forward ran at half the speed it has when the blocks are reused. This cache
// serves blocks of at least kMinCachedBytes from a best-fit pool of freed
// ones, and holds at most `max_cached_bytes` of free blocks: a block freed
// into a full pool goes back to the system. Smaller blocks are allocated and
// freed as LibTorch's default CPU allocator does (c10::alloc_cpu/free_cpu).
//
// Every block starts with a 64-byte header (owner and size) in front of the
// data, so that a bare data pointer can be freed: oneDNN's buffers go through
// Allocator::raw_allocate/raw_deallocate, whose deleter sees only that pointer.
//
// Thread-safe; the pool is shared by all threads. Install once, early (before
// tensors are created); it stays installed for the life of the process.

#ifndef OCLIP_MODEL_CACHING_CPU_ALLOCATOR_H_
#define OCLIP_MODEL_CACHING_CPU_ALLOCATOR_H_

#include <c10/core/Allocator.h>

#include <cstddef>
#include <map>
#include <mutex>

namespace oclip {

class CachingCpuAllocator : public c10::Allocator {
 public:
  // Blocks below this size are not cached (glibc's heap reuses those well).
  static constexpr size_t kMinCachedBytes = size_t{1} << 20;

  // Blocks handed out must be freed before the allocator is destroyed.
  explicit CachingCpuAllocator(size_t max_cached_bytes);
  ~CachingCpuAllocator() override;

  c10::DataPtr allocate(size_t bytes) const override;
  c10::DeleterFnPtr raw_deleter() const override { return &Release; }

  // Free bytes held in the pool, and the blocks handed out so far that came
  // from it (for tests and logs).
  size_t cached_bytes() const;
  size_t reused_blocks() const;

 private:
  struct Header;
  static void Release(void* data);
  void ReturnBlock(Header* header) const;

  const size_t max_cached_bytes_;
  mutable std::mutex mutex_;
  mutable std::multimap<size_t, Header*> free_blocks_;  // data bytes -> block
  mutable size_t cached_bytes_ = 0;
  mutable size_t reused_blocks_ = 0;
};

// Installs a process-wide CachingCpuAllocator in front of LibTorch's CPU
// allocator (once; later calls do nothing and return the installed one).
// `max_cached_bytes` bounds the memory it keeps beyond what tensors use.
CachingCpuAllocator* InstallCachingCpuAllocator(size_t max_cached_bytes);

}  // namespace oclip

#endif  // OCLIP_MODEL_CACHING_CPU_ALLOCATOR_H_
