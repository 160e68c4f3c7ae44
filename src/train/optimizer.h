// What every atq training loop shares: AdamW with decay on weight matrices only, and a warm-up + cosine
// learning-rate schedule.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/optim/adamw.h>

namespace atq {

// Weight decay on tensors of two or more dims; none on biases and norm scales (decaying those only fights
// the normalization). betas: AdamW's (beta1, beta2).
std::unique_ptr<torch::optim::AdamW> MakeAdamW(const std::vector<torch::Tensor>& parameters, double learning_rate,
                                               double weight_decay, double beta1 = 0.9, double beta2 = 0.999);

void SetLearningRate(torch::optim::AdamW& optimizer, double learning_rate);

// Linear warm-up from 0 over `warmup` steps, then cosine from `peak` to `minimum` at `total` steps.
double WarmupCosineLearningRate(int64_t step, int64_t total, int64_t warmup, double peak, double minimum = 0);

}  // namespace atq
