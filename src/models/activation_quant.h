// A point where a vision model's activations can be fake-quantized: it passes tensors through unchanged until
// told to observe them (calibration) and then to quantize them to a uniform b-bit grid whose range was chosen
// from what it observed. Layers' inputs and the attention's queries and keys carry one each.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace atq {

// How a clipping range is chosen from observed values.
enum class RangeMethod {
  kMinMax,      // the largest |x| seen
  kPercentile,  // the `percentile` quantile of |x|
  kMse,         // the clip that minimizes the mean squared quantization error of the observed values
};

// The largest code of a b-bit activation grid: 2^b - 1 unsigned, 2^(b-1) - 1 signed.
int64_t MaxActivationCode(int bits, bool unsigned_grid);

// (clamp(round(x / scale) + zero_point) - zero_point) * scale on that grid, the gradient passing straight through
// inside the range. A zero point (affine grid) needs the unsigned codes [0, 2^b - 1].
torch::Tensor FakeQuantizeActivation(const torch::Tensor& x, double scale, int bits, bool unsigned_grid,
                                     int64_t zero_point = 0);

class ActivationQuantizerImpl : public torch::nn::Module {
 public:
  ActivationQuantizerImpl() = default;

  // x unchanged, or observed (recorded, unchanged), or fake-quantized: round(clamp(x / scale)) * scale on the
  // signed grid [-(2^(b-1) - 1), 2^(b-1) - 1], or on the unsigned grid [0, 2^b - 1] when every observed value
  // was >= 0 (after ReLU). The gradient passes straight through inside the range.
  torch::Tensor forward(const torch::Tensor& x);

  // Starts recording: keeps at most `max_samples` values (a seeded random subset of every batch) and, with
  // keep_batches > 0, the first keep_batches whole tensors (ranking-aware attention needs them).
  void Observe(int64_t max_samples = 1 << 18, int64_t keep_batches = 0);
  // Stops recording and sets the grid: `bits` (2..16) and a range by `method` (percentile in (0, 1]).
  // With `affine`, values of both signs get the unsigned codes and an integer zero point, the range [lo, hi]
  // spanning the observed minimum and maximum (shrunk together by the percentile or MSE rule) instead of a
  // symmetric [-m, m]: what SiLU/GELU outputs need, whose negative side is a small fraction of the positive one,
  // so that a symmetric grid spends almost half its codes where nothing falls. Integer kernels take a zero point
  // as one correction per output (zero_point * the weight row's sum). Throws atq::Error when nothing was observed.
  void Calibrate(int bits, RangeMethod method, double percentile = 0.9999, bool affine = false);
  // Per-channel smoothing (SmoothQuant, Xiao et al. 2023, applied where the activations are quantized): every
  // input is divided by `divisor` along `dim` (1 for a convolution's [B, C, H, W], -1 for a linear layer's
  // [..., C]) before it is observed or rounded, the layer's weight having been multiplied by it along its input
  // channels, so the product is unchanged in float. Channels with outliers get a larger divisor and stop
  // stretching the per-tensor grid of the others; the quantizing step that turns float activations into codes
  // takes a per-channel multiplier at no extra cost. An undefined divisor turns it off.
  void SetChannelDivisor(const torch::Tensor& divisor, int64_t dim);
  const torch::Tensor& channel_divisor() const { return divisor_; }
  // Records the largest |x| of every channel along `dim` (before any divisor) until StopChannelMax.
  void ObserveChannelMax(int64_t dim);
  torch::Tensor StopChannelMax();  // [C] float32; throws atq::Error when nothing was seen
  // Sets the grid directly (ranking-aware search, per-timestep grids, tests).
  void SetGrid(int bits, double scale, bool unsigned_grid, int64_t zero_point = 0);
  void Disable();  // back to passing tensors through (keeps what was observed)

  bool enabled() const { return bits_ > 0; }
  int bits() const { return bits_; }
  double scale() const { return scale_; }
  bool unsigned_grid() const { return unsigned_; }
  int64_t zero_point() const { return zero_point_; }  // 0 but for an affine grid over both signs
  const torch::Tensor& samples() const { return samples_; }         // [n] float32, observed values
  const std::vector<torch::Tensor>& batches() const { return batches_; }  // whole tensors kept
  const std::vector<int64_t>& last_shape() const { return last_shape_; }  // of the last tensor seen (energy counts)

 private:
  void CalibrateAffine(int bits, RangeMethod method, double percentile);
  torch::Tensor Divided(const torch::Tensor& x) const;

  torch::Tensor divisor_;  // [C], or undefined
  int64_t divisor_dim_ = 1;
  torch::Tensor channel_max_;
  int64_t channel_max_dim_ = 0;
  bool observing_channels_ = false;

  bool observing_ = false;
  int64_t max_samples_ = 0, keep_batches_ = 0, batches_seen_ = 0;
  torch::Tensor samples_;
  std::vector<torch::Tensor> batches_;
  double observed_min_ = 0;
  int bits_ = 0;
  double scale_ = 1;
  bool unsigned_ = false;
  int64_t zero_point_ = 0;
  std::vector<int64_t> last_shape_;
};
TORCH_MODULE(ActivationQuantizer);

}  // namespace atq
