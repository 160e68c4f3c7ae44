// Timing of torch::nn::functional::linear in float32.
#include "eval/torch_matmul_baseline.h"

#include <chrono>

#include <torch/torch.h>

#include "torch/tensor_bridge.h"

namespace atq {

double TorchMatMulSeconds(int64_t rows, int64_t cols, int64_t batch, int threads, double min_seconds) {
  SetTorchThreads(threads);
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = torch::randn({rows, cols}) * 0.02;
  const torch::Tensor x = torch::randn({batch, cols});
  torch::Tensor y = torch::nn::functional::linear(x, weight);  // warm-up
  using Clock = std::chrono::steady_clock;
  int64_t calls = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    y = torch::nn::functional::linear(x, weight);
    ++calls;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (calls < 3 || elapsed < min_seconds);
  return elapsed / static_cast<double>(calls);
}

}  // namespace atq
