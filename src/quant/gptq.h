// GPTQ (Frantar et al. 2022): quantize a weight matrix column by column, each time spreading the rounding
// error over the columns not yet quantized through the inverse Hessian of the layer's inputs, so the layer's
// output on the calibration inputs moves as little as possible. Works on any grid of weight_grid.h, ternary
// included (the threshold and scale of each group are fitted on the error-updated weights when the group
// starts, so they adapt to the compensation).
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "grid/quantized_weight.h"
#include "grid/weight_grid.h"

namespace atq {

// The running second moment H = (2 / n) sum x x^T of a layer's inputs, as GPTQ defines it.
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t features, torch::Device device = torch::kCPU);
  void Add(const torch::Tensor& inputs);  // [..., features]; any float dtype
  const torch::Tensor& hessian() const;  // [features, features] float32
  int64_t samples() const { return samples_; }

 private:
  // H is symmetric: Add multiplies only the tiles on and above the diagonal (about half of X^T X's work on wide
  // inputs such as a 14336-feature down_proj) and hessian() mirrors the others when it is read.
  static constexpr int64_t kTile = 512;
  torch::Tensor hessian_;
  int64_t samples_ = 0;
  mutable bool mirrored_ = true;
};

struct GptqOptions {
  double damp = 0.01;          // added to H's diagonal: damp * mean(diag H)
  int max_damp_raises = 6;     // each failed Cholesky raises damp tenfold
  int64_t block_size = 128;    // columns per lazy batch update
  bool act_order = false;      // columns in order of decreasing H diagonal (largest input energy first)
  bool static_groups = false;  // group parameters fitted on the original weights before any update
};

struct GptqResult {
  QuantizedWeight weight;
  double damp = 0;      // the dampening that made H positive definite (relative to mean diag H)
  int damp_raises = 0;  // how often it had to be raised
};

// weight: [rows, cols]; hessian: [cols, cols] from HessianAccumulator. With act_order and per-group scales the
// groups are static (fitted before the reordering), so every group is a contiguous run of columns as atq's
// packed formats store them. Throws atq::Error when H stays indefinite after max_damp_raises.
GptqResult Gptq(const torch::Tensor& weight, const torch::Tensor& hessian, const WeightGrid& grid,
                const GptqOptions& options = {});

}  // namespace atq
