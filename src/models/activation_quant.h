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

// round(clamp(x / scale)) * scale on that grid, the gradient passing straight through inside the range.
torch::Tensor FakeQuantizeActivation(const torch::Tensor& x, double scale, int bits, bool unsigned_grid);

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
  // Throws atq::Error when nothing was observed.
  void Calibrate(int bits, RangeMethod method, double percentile = 0.9999);
  // Sets the grid directly (ranking-aware search, tests).
  void SetGrid(int bits, double scale, bool unsigned_grid);
  void Disable();  // back to passing tensors through (keeps what was observed)

  bool enabled() const { return bits_ > 0; }
  int bits() const { return bits_; }
  double scale() const { return scale_; }
  bool unsigned_grid() const { return unsigned_; }
  const torch::Tensor& samples() const { return samples_; }         // [n] float32, observed values
  const std::vector<torch::Tensor>& batches() const { return batches_; }  // whole tensors kept
  const std::vector<int64_t>& last_shape() const { return last_shape_; }  // of the last tensor seen (energy counts)

 private:
  bool observing_ = false;
  int64_t max_samples_ = 0, keep_batches_ = 0, batches_seen_ = 0;
  torch::Tensor samples_;
  std::vector<torch::Tensor> batches_;
  double observed_min_ = 0;
  int bits_ = 0;
  double scale_ = 1;
  bool unsigned_ = false;
  std::vector<int64_t> last_shape_;
};
TORCH_MODULE(ActivationQuantizer);

}  // namespace atq
