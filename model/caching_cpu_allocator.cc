#include "model/caching_cpu_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <new>

namespace oclip {

// In front of every block's data; 64 bytes keep the data 64-byte aligned, as
// c10::alloc_cpu aligns the block itself.
struct alignas(64) CachingCpuAllocator::Header {
  const CachingCpuAllocator* owner;
  size_t bytes;  // of data, after the header
};

CachingCpuAllocator::CachingCpuAllocator(size_t max_cached_bytes)
    : max_cached_bytes_(max_cached_bytes) {
  static_assert(sizeof(Header) == 64, "the data must stay 64-byte aligned");
}

CachingCpuAllocator::~CachingCpuAllocator() {
  for (const auto& [bytes, header] : free_blocks_) c10::free_cpu(header);
}

c10::DataPtr CachingCpuAllocator::allocate(size_t bytes) const {
  Header* header = nullptr;
  if (bytes >= kMinCachedBytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    // Best fit, wasting at most a quarter: a batch of another size still
    // finds the blocks of one nearby.
    auto it = free_blocks_.lower_bound(bytes);
    if (it != free_blocks_.end() && it->first <= bytes + bytes / 4) {
      header = it->second;
      cached_bytes_ -= it->first;
      ++reused_blocks_;
      free_blocks_.erase(it);
    }
  }
  if (header == nullptr) {
    // Throws c10::Error when out of memory, as the default allocator does.
    header = new (c10::alloc_cpu(sizeof(Header) + bytes)) Header{this, bytes};
  }
  void* data = header + 1;
  return c10::DataPtr(data, data, &Release, c10::Device(c10::DeviceType::CPU));
}

void CachingCpuAllocator::Release(void* data) {
  if (data == nullptr) return;
  Header* header = static_cast<Header*>(data) - 1;
  header->owner->ReturnBlock(header);
}

void CachingCpuAllocator::ReturnBlock(Header* header) const {
  if (header->bytes >= kMinCachedBytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + header->bytes <= max_cached_bytes_) {
      free_blocks_.emplace(header->bytes, header);
      cached_bytes_ += header->bytes;
      return;
    }
  }
  c10::free_cpu(header);  // Small, or the pool is full: back to the system.
}

size_t CachingCpuAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_bytes_;
}

size_t CachingCpuAllocator::reused_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reused_blocks_;
}

CachingCpuAllocator* InstallCachingCpuAllocator(size_t max_cached_bytes) {
  // Never destroyed: tensors may still be freed during static destruction.
  static CachingCpuAllocator* const installed = [max_cached_bytes] {
    auto* allocator = new CachingCpuAllocator(max_cached_bytes);
    // Priority 1 wins over LibTorch's default allocator (registered at 0).
    c10::SetCPUAllocator(allocator, /*priority=*/1);
    return allocator;
  }();
  return installed;
}

}  // namespace oclip
