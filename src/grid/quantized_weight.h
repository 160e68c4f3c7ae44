// A weight matrix rounded to one of atq's grids: its codes and scales in the packed format's layout, and the
// float values those stand for. Every quantizer (RTN, ATQ, GPTQ, vision PTQ, the QAT fake quantizers) returns
// one; packing it and dequantizing the bytes gives back `values` bit for bit.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "formats/quant_type.h"
#include "grid/weight_grid.h"

namespace atq {

struct QuantizedWeight {
  Layout layout;         // packed type, rows, cols, granularity, group size
  torch::Tensor codes;   // [rows, cols] float32 holding the stored integer codes
  torch::Tensor scales;  // [rows, groups per row] float32 (per tensor: every row holds the one scale)
  torch::Tensor zeros;   // like scales for asymmetric grids, else undefined
  torch::Tensor thresholds;  // like scales (float64) for ternary grids fitted by their rule, else undefined
  torch::Tensor values;  // [rows, cols] float32: what the packed tensor dequantizes to
};

// The column spans [begin, end) that share scales under the grid: one per group, or the whole row.
std::vector<std::pair<int64_t, int64_t>> ScaleSpans(const WeightGrid& grid, int64_t cols);

// Fills a QuantizedWeight from per-span codes and parameters (spans as ScaleSpans gives them).
QuantizedWeight AssembleQuantized(const WeightGrid& grid, const torch::Tensor& codes,
                                  const std::vector<GridParams>& span_params);

// The bytes of atq's packed format (formats/atq_packed.h) for the weight.
std::vector<uint8_t> PackQuantized(const QuantizedWeight& weight);

// Round-to-nearest: fit the grid on each span of the weight ([rows, cols]) and round every weight to it.
QuantizedWeight QuantizeRtn(const torch::Tensor& weight, const WeightGrid& grid);

// The grid's codes with given scales in place of the fitted ones (quantization-aware training's learned scales):
// `scales` is [rows, spans] (ScaleSpans), used as the format stores them (StoredScale). Ternary grids pick their
// codes by their own rule, which does not depend on the scale (atq's: the threshold; tq2_0: round(w / max|w|) of
// the block), so the scale only sets the magnitude; uniform symmetric grids round w / scale and clamp. Per-tensor
// grids take row 0's scale for every row. Throws atq::Error for grids whose codes a free scale cannot express
// exactly in their format (asymmetric: the zero point is fitted with the scale; q8_0 and q4_0: not QAT grids) and
// for a scale that is not finite and positive.
QuantizedWeight QuantizeWithScales(const torch::Tensor& weight, const WeightGrid& grid, const torch::Tensor& scales);
// Whether QuantizeWithScales takes the grid.
bool ScalesCanBeLearned(const WeightGrid& grid);

// [rows, spans] per-span quantities (scales, thresholds) repeated over each span's columns: [rows, cols].
torch::Tensor ExpandSpans(const WeightGrid& grid, const torch::Tensor& per_span, int64_t cols);

// Ternary grids: every span's scale refit for the codes as they are, leaving out the positions `exclude` marks
// (bool [rows, cols]; residual precision boosting keeps those weights exactly, so they add no error whatever the
// scale): the mean |w| over the nonzero codes that are not excluded, the minimizer of ||w - a t||^2 over them
// (0 where none is). Per-tensor grids fit one scale over all rows. `values` follow the new scales.
void RefitTernaryScales(QuantizedWeight& quantized, const WeightGrid& grid, const torch::Tensor& weight,
                        const torch::Tensor& exclude);

// ||(W - Q) X||^2 / ||W X||^2 for inputs whose second moment is `hessian` (any positive multiple of X X^T),
// computed as tr(D H D^T) / tr(W H W^T); the weight-space ||W - Q||^2 / ||W||^2 when hessian is undefined.
double RelativeOutputError(const torch::Tensor& weight, const torch::Tensor& quantized, const torch::Tensor& hessian);

}  // namespace atq
