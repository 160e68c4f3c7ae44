// ActivationQuantizer: observation, range calibration (min-max, percentile, MSE) and fake quantization.
#include "models/activation_quant.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "util/error.h"

namespace atq {
namespace {

constexpr uint64_t kSampleSeed = 0x5eed;
constexpr int kMseCandidates = 100;  // clips tried between max / 100 and max

// A channel dimension given from either end (-1: the last) as an index into `rank` dimensions.
int64_t ChannelDim(int64_t dim, int64_t rank) { return dim < 0 ? rank + dim : dim; }

}  // namespace

int64_t MaxActivationCode(int bits, bool unsigned_grid) {
  return unsigned_grid ? (int64_t{1} << bits) - 1 : (int64_t{1} << (bits - 1)) - 1;
}

torch::Tensor FakeQuantizeActivation(const torch::Tensor& x, double scale, int bits, bool unsigned_grid,
                                     int64_t zero_point) {
  const int64_t max_code = MaxActivationCode(bits, unsigned_grid);
  const double top = static_cast<double>(max_code - zero_point) * scale;
  const double bottom = unsigned_grid ? -static_cast<double>(zero_point) * scale : -top;
  const torch::Tensor clamped = x.clamp(bottom, top);
  // The codes are round(x / s) + z with an integer z, so the value is round(x / s) * s: a zero point moves the
  // range, not the grid.
  return clamped + ((clamped / scale).round() * scale - clamped).detach();  // straight through inside the range
}

torch::Tensor ActivationQuantizerImpl::Divided(const torch::Tensor& x) const {
  if (!divisor_.defined()) return x;
  const int64_t dim = ChannelDim(divisor_dim_, x.dim());
  Require(dim >= 0 && dim < x.dim() && x.size(dim) == divisor_.size(0),
          "activation smoothing: {} channel divisors for an input of {} dimensions with {} along dimension {}",
          divisor_.size(0), x.dim(), dim >= 0 && dim < x.dim() ? x.size(dim) : 0, divisor_dim_);
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[static_cast<size_t>(dim)] = divisor_.size(0);
  return x / divisor_.to(x.dtype()).reshape(shape);
}

void ActivationQuantizerImpl::SetChannelDivisor(const torch::Tensor& divisor, int64_t dim) {
  if (divisor.defined()) {
    Require(divisor.dim() == 1 && divisor.numel() > 0 && divisor.gt(0).all().item<bool>() &&
                divisor.isfinite().all().item<bool>(),
            "activation smoothing: the divisors must be a vector of positive finite numbers");
  }
  divisor_ = divisor.defined() ? divisor.to(torch::kFloat32).contiguous() : divisor;
  divisor_dim_ = dim;
}

void ActivationQuantizerImpl::ObserveChannelMax(int64_t dim) {
  observing_channels_ = true;
  channel_max_dim_ = dim;
  channel_max_ = torch::Tensor();
}

torch::Tensor ActivationQuantizerImpl::StopChannelMax() {
  observing_channels_ = false;
  Require(channel_max_.defined(), "activation quantizer: no input seen while recording channel maxima");
  return std::exchange(channel_max_, torch::Tensor());
}

torch::Tensor ActivationQuantizerImpl::forward(const torch::Tensor& input) {
  if (observing_channels_) {
    torch::NoGradGuard no_grad;
    const int64_t dim = ChannelDim(channel_max_dim_, input.dim());
    const torch::Tensor moved = input.detach().movedim(dim, -1).reshape({-1, input.size(dim)});
    const torch::Tensor seen = std::get<0>(moved.abs().max(0)).to(torch::kFloat32);
    channel_max_ = channel_max_.defined() ? torch::maximum(channel_max_, seen) : seen;
  }
  const torch::Tensor x = Divided(input);
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
  return FakeQuantizeActivation(x, scale_, bits_, unsigned_, zero_point_);
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

void ActivationQuantizerImpl::Calibrate(int bits, RangeMethod method, double percentile, bool affine) {
  observing_ = false;
  Require(samples_.defined() && samples_.numel() > 0, "activation quantizer: calibrate needs observed values");
  Require(bits >= 2 && bits <= 16, "activation bits must be 2..16, not {}", bits);
  Require(percentile > 0 && percentile <= 1, "percentile must be in (0, 1], not {}", percentile);
  torch::NoGradGuard no_grad;
  const bool unsigned_grid = observed_min_ >= 0;
  if (affine && !unsigned_grid) {
    CalibrateAffine(bits, method, percentile);
    return;
  }
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

void ActivationQuantizerImpl::CalibrateAffine(int bits, RangeMethod method, double percentile) {
  const int64_t levels = MaxActivationCode(bits, /*unsigned_grid=*/true);
  double lo = samples_.min().item<double>(), hi = samples_.max().item<double>();
  if (method == RangeMethod::kPercentile) {  // the quantile at each end
    const int64_t n = samples_.numel();
    const auto kth = [&](double q) {
      return std::get<0>(samples_.kthvalue(std::clamp<int64_t>(static_cast<int64_t>(std::ceil(q * n)), 1, n)))
          .item<double>();
    };
    lo = kth(1 - percentile);
    hi = kth(percentile);
  }
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  // The grid over [a lo, a hi]: the scale spans it, and the zero point is where 0 falls (an integer, so that 0
  // stays exact: padding and masked values cost nothing).
  const auto grid = [&](double a) {
    const double scale = (hi - lo) * a / static_cast<double>(levels);
    return std::pair<double, int64_t>{
        scale, std::clamp<int64_t>(static_cast<int64_t>(std::llround(-lo * a / scale)), 0, levels)};
  };
  double best_shrink = 1;
  if (method == RangeMethod::kMse && hi > lo) {  // lo and hi shrink together, as the symmetric search shrinks |x|
    double best = std::numeric_limits<double>::infinity();
    for (int i = 1; i <= kMseCandidates; ++i) {
      const double a = static_cast<double>(i) / kMseCandidates;
      const auto [scale, zero] = grid(a);
      const double error =
          (FakeQuantizeActivation(samples_, scale, bits, true, zero) - samples_).pow(2).mean().item<double>();
      if (error < best) {
        best = error;
        best_shrink = a;
      }
    }
  }
  if (hi <= lo) {  // every observed value was 0
    SetGrid(bits, 1.0, /*unsigned_grid=*/true, 0);
    return;
  }
  const auto [scale, zero] = grid(best_shrink);
  SetGrid(bits, scale, /*unsigned_grid=*/true, zero);
}

void ActivationQuantizerImpl::SetGrid(int bits, double scale, bool unsigned_grid, int64_t zero_point) {
  Require(bits >= 2 && bits <= 16, "activation bits must be 2..16, not {}", bits);
  Require(scale > 0 && std::isfinite(scale), "activation scale must be positive, not {}", scale);
  Require(zero_point == 0 || (unsigned_grid && zero_point > 0 && zero_point <= MaxActivationCode(bits, true)),
          "activation zero point {} needs the unsigned grid and must lie in [0, {}]", zero_point,
          MaxActivationCode(bits, true));
  observing_ = false;
  bits_ = bits;
  scale_ = scale;
  unsigned_ = unsigned_grid;
  zero_point_ = zero_point;
}

void ActivationQuantizerImpl::Disable() {
  observing_ = false;
  bits_ = 0;
}

}  // namespace atq
