// ActivationQuantizer: observation, range calibration (min-max, percentile, MSE) and fake quantization.
#include "models/activation_quant.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace atq {
namespace {

constexpr uint64_t kSampleSeed = 0x5eed;
constexpr int kMseCandidates = 100;  // clips tried between max / 100 and max

}  // namespace

int64_t MaxActivationCode(int bits, bool unsigned_grid) {
  return unsigned_grid ? (int64_t{1} << bits) - 1 : (int64_t{1} << (bits - 1)) - 1;
}

torch::Tensor FakeQuantizeActivation(const torch::Tensor& x, double scale, int bits, bool unsigned_grid) {
  const double top = static_cast<double>(MaxActivationCode(bits, unsigned_grid)) * scale;
  const torch::Tensor clamped = x.clamp(unsigned_grid ? 0.0 : -top, top);
  return clamped + ((clamped / scale).round() * scale - clamped).detach();  // straight through inside the range
}

torch::Tensor ActivationQuantizerImpl::forward(const torch::Tensor& x) {
  last_shape_.assign(x.sizes().begin(), x.sizes().end());  // reuses the vector: no allocation per call
  if (observing_) {
    torch::NoGradGuard no_grad;
    const torch::Tensor flat = x.detach().reshape({-1}).to(torch::kCPU, torch::kFloat32);
    observed_min_ = std::min(observed_min_, flat.min().item<double>());
    torch::Tensor picked = flat;
    if (flat.numel() > max_samples_) {
      auto generator = at::detail::createCPUGenerator(kSampleSeed + static_cast<uint64_t>(batches_seen_));
      picked = flat.index_select(0, torch::randperm(flat.numel(), generator, torch::kLong).slice(0, 0, max_samples_));
    }
    samples_ = samples_.defined() ? torch::cat({samples_, picked}) : picked.clone();
    if (samples_.numel() > max_samples_) {  // every batch keeps an equal share
      auto generator = at::detail::createCPUGenerator(kSampleSeed - static_cast<uint64_t>(batches_seen_));
      samples_ = samples_.index_select(0, torch::randperm(samples_.numel(), generator, torch::kLong)
                                              .slice(0, 0, max_samples_));
    }
    if (static_cast<int64_t>(batches_.size()) < keep_batches_) batches_.push_back(x.detach().clone());
    ++batches_seen_;
    return x;
  }
  if (bits_ == 0) return x;
  return FakeQuantizeActivation(x, scale_, bits_, unsigned_);
}

void ActivationQuantizerImpl::Observe(int64_t max_samples, int64_t keep_batches) {
  Require(max_samples > 0 && keep_batches >= 0, "activation observer: max_samples must be > 0, keep_batches >= 0");
  observing_ = true;
  max_samples_ = max_samples;
  keep_batches_ = keep_batches;
  samples_ = torch::Tensor();
  batches_.clear();
  batches_seen_ = 0;
  observed_min_ = std::numeric_limits<double>::infinity();
}

void ActivationQuantizerImpl::Calibrate(int bits, RangeMethod method, double percentile) {
  observing_ = false;
  Require(samples_.defined() && samples_.numel() > 0, "activation quantizer: calibrate needs observed values");
  Require(bits >= 2 && bits <= 16, "activation bits must be 2..16, not {}", bits);
  Require(percentile > 0 && percentile <= 1, "percentile must be in (0, 1], not {}", percentile);
  torch::NoGradGuard no_grad;
  const bool unsigned_grid = observed_min_ >= 0;
  const torch::Tensor magnitude = samples_.abs();
  const double max = magnitude.max().item<double>();
  const double levels = static_cast<double>(MaxActivationCode(bits, unsigned_grid));
  double clip = max;
  if (method == RangeMethod::kPercentile) {
    const int64_t k = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(percentile * magnitude.numel())), 1,
                                          magnitude.numel());
    clip = std::get<0>(magnitude.kthvalue(k)).item<double>();
  } else if (method == RangeMethod::kMse) {
    double best = std::numeric_limits<double>::infinity();
    for (int i = 1; i <= kMseCandidates; ++i) {
      const double candidate = max * i / kMseCandidates;
      if (candidate <= 0) continue;
      const double error =
          (FakeQuantizeActivation(samples_, candidate / levels, bits, unsigned_grid) - samples_).pow(2).mean().item<double>();
      if (error < best) {
        best = error;
        clip = candidate;
      }
    }
  }
  SetGrid(bits, clip > 0 ? clip / levels : 1.0, unsigned_grid);
}

void ActivationQuantizerImpl::SetGrid(int bits, double scale, bool unsigned_grid) {
  Require(bits >= 2 && bits <= 16, "activation bits must be 2..16, not {}", bits);
  Require(scale > 0 && std::isfinite(scale), "activation scale must be positive, not {}", scale);
  observing_ = false;
  bits_ = bits;
  scale_ = scale;
  unsigned_ = unsigned_grid;
}

void ActivationQuantizerImpl::Disable() {
  observing_ = false;
  bits_ = 0;
}

}  // namespace atq
