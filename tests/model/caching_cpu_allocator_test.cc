// The caching CPU allocator: reuse of freed large blocks, the best-fit bound,
// the pool's cap, small blocks not cached, the raw allocation path oneDNN
// uses, and use from several threads (whose writes the sanitizer build checks).

#include "model/caching_cpu_allocator.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

namespace oclip {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

TEST(CachingCpuAllocatorTest, FreedLargeBlockIsHandedOutAgain) {
  CachingCpuAllocator allocator(64 * kMiB);
  void* first = nullptr;
  {
    c10::DataPtr block = allocator.allocate(2 * kMiB);
    first = block.get();
    std::memset(first, 1, 2 * kMiB);
  }
  EXPECT_EQ(allocator.cached_bytes(), 2 * kMiB);
  c10::DataPtr again = allocator.allocate(2 * kMiB);
  EXPECT_EQ(again.get(), first);
  EXPECT_EQ(allocator.reused_blocks(), 1u);
  EXPECT_EQ(allocator.cached_bytes(), 0u);
}

TEST(CachingCpuAllocatorTest, ReusesABlockAtMostAQuarterLarger) {
  CachingCpuAllocator allocator(64 * kMiB);
  void* four = nullptr;
  {
    c10::DataPtr block = allocator.allocate(4 * kMiB);
    four = block.get();
  }
  c10::DataPtr two = allocator.allocate(2 * kMiB);  // 4 MiB would waste half
  EXPECT_NE(two.get(), four);
  EXPECT_EQ(allocator.reused_blocks(), 0u);
  c10::DataPtr three_and_a_half = allocator.allocate(7 * kMiB / 2);
  EXPECT_EQ(three_and_a_half.get(), four);
  std::memset(three_and_a_half.get(), 2, 7 * kMiB / 2);
  EXPECT_EQ(allocator.reused_blocks(), 1u);
}

TEST(CachingCpuAllocatorTest, PoolNeverHoldsMoreThanItsCap) {
  CachingCpuAllocator allocator(3 * kMiB);
  {
    c10::DataPtr a = allocator.allocate(2 * kMiB);
    c10::DataPtr b = allocator.allocate(2 * kMiB);
  }
  EXPECT_EQ(allocator.cached_bytes(), 2 * kMiB);  // the second went back to the system
}

TEST(CachingCpuAllocatorTest, SmallBlocksAreNotCached) {
  CachingCpuAllocator allocator(64 * kMiB);
  {
    c10::DataPtr small = allocator.allocate(CachingCpuAllocator::kMinCachedBytes - 1);
    std::memset(small.get(), 3, CachingCpuAllocator::kMinCachedBytes - 1);
  }
  EXPECT_EQ(allocator.cached_bytes(), 0u);
}

TEST(CachingCpuAllocatorTest, RawAllocationsAreFreedByTheirPointerAlone) {
  // oneDNN (through ideep) allocates with raw_allocate and frees with
  // raw_deallocate, which only has the data pointer.
  CachingCpuAllocator allocator(64 * kMiB);
  ASSERT_NE(allocator.raw_deleter(), nullptr);
  for (size_t bytes : {size_t{100}, 2 * kMiB}) {
    void* data = allocator.raw_allocate(bytes);
    ASSERT_NE(data, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % 64, 0u);
    std::memset(data, 4, bytes);
    allocator.raw_deallocate(data);
  }
  EXPECT_EQ(allocator.cached_bytes(), 2 * kMiB);
}

TEST(CachingCpuAllocatorTest, TensorsComputeInItsBlocks) {
  CachingCpuAllocator allocator(64 * kMiB);
  const int64_t n = 1 << 19;  // 2 MiB of floats
  auto make = [&](float value) {
    c10::Storage storage(c10::Storage::use_byte_size_t(), n * sizeof(float), &allocator);
    return torch::empty({0}).set_(storage).resize_({n}).fill_(value);
  };
  { torch::Tensor first = make(1.0f); }
  const torch::Tensor a = make(2.0f);  // the first one's block, refilled
  const torch::Tensor b = make(3.0f);
  EXPECT_EQ(allocator.reused_blocks(), 1u);
  EXPECT_TRUE(torch::equal(a + b, torch::full({n}, 5.0f)));
}

TEST(CachingCpuAllocatorTest, ThreadsShareThePoolSafely) {
  constexpr size_t kCap = 24 * kMiB;
  CachingCpuAllocator allocator(kCap);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&allocator, t] {
      std::mt19937 random(t);
      std::vector<c10::DataPtr> held;
      for (int i = 0; i < 300; ++i) {
        const size_t bytes = kMiB + random() % (3 * kMiB);
        c10::DataPtr block = allocator.allocate(bytes);
        // Every byte belongs to this thread alone while it holds the block.
        std::memset(block.get(), t, bytes);
        held.push_back(std::move(block));
        if (held.size() > 3) held.erase(held.begin());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_LE(allocator.cached_bytes(), kCap);
  EXPECT_GT(allocator.reused_blocks(), 0u);
}

}  // namespace
}  // namespace oclip
