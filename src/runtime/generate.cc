// The generation loop: prefill the prompt once, then one cached step per token.
#include "runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <torch/torch.h>

#include "util/error.h"
#include "util/log.h"

namespace atq {

int32_t SampleToken(const torch::Tensor& logits, double temperature, double top_p, double uniform) {
  if (temperature <= 0) return static_cast<int32_t>(logits.argmax().item<int64_t>());
  const torch::Tensor probs = torch::softmax(logits.to(torch::kFloat64) / temperature, -1);
  const auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
  const double* p = sorted.data_ptr<double>();
  const int64_t vocab = sorted.numel();
  // The nucleus: the most probable tokens until their mass reaches top_p (at least one).
  int64_t keep = 0;
  double mass = 0;
  while (keep < vocab && (keep == 0 || mass < top_p)) mass += p[keep++];
  double target = uniform * mass, running = 0;
  for (int64_t i = 0; i < keep; ++i) {
    running += p[i];
    if (target < running) return static_cast<int32_t>(order[i].item<int64_t>());
  }
  return static_cast<int32_t>(order[keep - 1].item<int64_t>());
}

GenerateResult Generate(CausalLmImpl& model, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token) {
  Require(!prompt.empty(), "generation needs at least one prompt token");
  Require(options.temperature >= 0, "temperature must be >= 0, got {}", options.temperature);
  Require(options.top_p > 0 && options.top_p <= 1, "top-p must be in (0, 1], got {}", options.top_p);
  // The prompt must fit the usable context (GPT-2 has no position past its table), and generation stops when the
  // context is full.
  const int64_t context = UsableContext(model.config());
  Require(static_cast<int64_t>(prompt.size()) <= context,
          "the prompt has {} tokens, more than the model's context of {} tokens", prompt.size(), context);
  if (static_cast<int64_t>(prompt.size()) > model.config().max_positions) {
    LogWarn("the prompt has {} tokens, more than the {} the model was trained at", prompt.size(),
            model.config().max_positions);
  }

  torch::NoGradGuard no_grad;
  model.eval();
  const torch::Device device = model.parameters().front().device();
  std::mt19937_64 rng(options.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  KvCache cache;
  GenerateResult result;
  result.stop_reason = "max_tokens";

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  torch::Tensor input =
      torch::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), torch::kInt64).unsqueeze(0).to(device);
  auto decode_start = start;
  for (int64_t step = 0; step < options.max_tokens; ++step) {
    if (cache.length + input.size(1) > context) {
      result.stop_reason = "context";
      break;
    }
    const torch::Tensor logits = model.LastLogits(input, &cache).squeeze(0).to(torch::kCPU, torch::kFloat32);
    const int32_t next = SampleToken(logits, options.temperature, options.top_p, uniform(rng));
    if (step == 0) {
      decode_start = Clock::now();
      result.prefill_seconds = std::chrono::duration<double>(decode_start - start).count();
    }
    result.tokens.push_back(next);
    if (on_token) on_token(next);
    if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), next) != options.stop_tokens.end()) {
      result.stop_reason = "stop_token";
      break;
    }
    input = torch::full({1, 1}, static_cast<int64_t>(next), torch::TensorOptions().dtype(torch::kInt64).device(device));
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - decode_start).count();
  const auto decoded = static_cast<double>(std::max<size_t>(result.tokens.size(), 1) - 1);
  result.decode_tokens_per_second = result.decode_seconds > 0 ? decoded / result.decode_seconds : 0;
  return result;
}

}  // namespace atq
