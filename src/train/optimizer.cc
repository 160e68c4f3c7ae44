// AdamW parameter groups and the learning-rate schedule.
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace atq {

std::unique_ptr<torch::optim::AdamW> MakeAdamW(const std::vector<torch::Tensor>& parameters, double learning_rate,
                                               double weight_decay, double beta1, double beta2) {
  std::vector<torch::Tensor> decayed, not_decayed;
  for (const torch::Tensor& parameter : parameters) (parameter.dim() > 1 ? decayed : not_decayed).push_back(parameter);
  const auto options = [&](double decay) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(learning_rate).betas({beta1, beta2}).weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, options(weight_decay));
  groups.emplace_back(not_decayed, options(0));
  return std::make_unique<torch::optim::AdamW>(std::move(groups), *options(weight_decay));
}

void SetLearningRate(torch::optim::AdamW& optimizer, double learning_rate) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(learning_rate);
  }
}

double WarmupCosineLearningRate(int64_t step, int64_t total, int64_t warmup, double peak, double minimum) {
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress =
      total > warmup ? std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(total - warmup)) : 1.0;
  return minimum + (peak - minimum) * 0.5 * (1 + std::cos(M_PI * progress));
}

}  // namespace atq
