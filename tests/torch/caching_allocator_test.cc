// The caching CPU allocator: a freed large block serves the next tensor of its size (same memory, no new pages),
// small tensors pass through, the cache keeps within its bound, and tensors work as ever.
#include "torch/caching_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace atq {
namespace {

TEST(CachingCpuAllocator, ReusesBlocksWithinItsBound) {
  UseCachingCpuAllocator(int64_t{64} << 20);
  UseCachingCpuAllocator();  // a second call changes nothing
  const CachingAllocatorStats start = CachingCpuAllocatorStats();
  void* first = nullptr;
  {
    torch::Tensor a = torch::full({1 << 20}, 2.0f);  // 4 MiB
    first = a.data_ptr();
    EXPECT_EQ(a.sum().item<float>(), 2.0f * (1 << 20));
  }
  EXPECT_GE(CachingCpuAllocatorStats().cached_bytes, int64_t{4} << 20);
  {
    torch::Tensor b = torch::ones({1 << 20});  // the same size: the same block
    EXPECT_EQ(b.data_ptr(), first);
    EXPECT_EQ(b.sum().item<float>(), static_cast<float>(1 << 20));
  }
  const CachingAllocatorStats after = CachingCpuAllocatorStats();
  EXPECT_EQ(after.allocations - start.allocations, 2);
  EXPECT_EQ(after.reused - start.reused, 1);
  {
    torch::Tensor small = torch::ones({1000});  // under 1 MiB: libtorch's own allocator
    EXPECT_EQ(small.sum().item<float>(), 1000.0f);
  }
  EXPECT_EQ(CachingCpuAllocatorStats().allocations, after.allocations);
  {
    // Three 30 MiB blocks freed together: the cache keeps what fits in 64 MiB and frees the rest.
    std::vector<torch::Tensor> big;
    for (int i = 0; i < 3; ++i) big.push_back(torch::zeros({30 << 18}));
  }
  EXPECT_LE(CachingCpuAllocatorStats().cached_bytes, int64_t{64} << 20);
  // Autograd through cached blocks: the gradient of sum(x^2) is 2x.
  torch::Tensor x = torch::full({1 << 19}, 3.0f, torch::requires_grad());
  (x * x).sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), torch::full({1 << 19}, 6.0f)));
  // raw_allocate / raw_deallocate (some of libtorch's convolutions use them), small and large blocks: each goes
  // back to the allocator that made it (a small one used to end the process with unordered_map::at).
  c10::Allocator* allocator = c10::GetCPUAllocator();
  for (const size_t bytes : {size_t{4096}, size_t{3} << 20}) {
    void* block = allocator->raw_allocate(bytes);
    ASSERT_NE(block, nullptr);
    static_cast<char*>(block)[bytes - 1] = 1;
    allocator->raw_deallocate(block);
  }
}

}  // namespace
}  // namespace atq
