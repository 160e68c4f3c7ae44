// The one description of what a weight gets (WeightGrid) and the one implementation of fitting and rounding it,
// per output row over a span of columns (a group, a whole row or the whole tensor). Language-model PTQ (RTN, ATQ,
// GPTQ), vision PTQ and the straight-through fake quantizers of QAT (grid/fake_quant.h) all round through here,
// so whatever codes they choose pack into atq's formats exactly (formats/atq_packed.h) and dequantize to the very
// floats they used.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <torch/types.h>

#include "formats/quant_type.h"

namespace atq {

// kQ8_0 and kQ4_0 are llama.cpp's block grids (32 weights per float16 scale; Q4_0's scale is the block's
// signed extreme over -8): GPTQ on them produces weights a GGUF holds exactly. kTQ2_0 is llama.cpp's ternary
// block grid (TQ2_0, or TQ1_0 with base3_packing): 256 weights per float16 scale d and trits, value d * trit. Its
// default fit is llama.cpp's (ThresholdRule::kAbsmax: d = max|w| of the block, trits round(w / d)); with another
// threshold rule each block is fitted as atq's ternary grids are (threshold from the rule, d the mean |w| of the
// weights kept, rounded to float16), which the same file format holds exactly. QAT on either trains exactly what the
// GGUF holds.
enum class GridKind { kUniform, kTernary, kQ8_0, kQ4_0, kTQ2_0 };

// Whether the kind is one of llama.cpp's block grids (fixed groups, scales inside the blocks), and its block.
bool IsGgmlGrid(GridKind kind);
int64_t GgmlGridBlock(GridKind kind);

// How a ternary grid picks its threshold on a span of weights (|w| <= threshold rounds to 0):
//   kRatio:     ratio * mean|w| of the span (0.7 is Li & Liu's ternary weight networks rule)
//   kSparsity:  the SparsityCount(s, n)-th smallest |w| of the span, so a share s of the weights becomes 0
//   kAbsolute:  the value itself
//   kAbsmax:    llama.cpp's TQ2_0/TQ1_0 rule, tq2_0 grids only: the scale is the span's max |w| and the trits are
//               round(w / scale), so weights below half the largest become 0 (the value is unused)
enum class ThresholdRule { kRatio, kSparsity, kAbsolute, kAbsmax };

// "ratio", "sparsity", "magnitude", "absmax"; the parser also takes QAT's older names magnitude_relative (ratio) and
// magnitude_absolute (magnitude).
std::string_view ThresholdRuleName(ThresholdRule rule);
std::optional<ThresholdRule> ParseThresholdRule(std::string_view name);

// How many of n weights a share s of them is: floor(s * n), counted so that products such as 0.29 * 100 =
// 28.999999999999996 still give 29 (the share the user wrote, not one weight fewer). Clamped to [0, n].
int64_t SparsityCount(double share, int64_t n);

// How a uniform symmetric grid's range is fitted on a span:
//   kMax: scale = max|w| / (2^(b-1) - 1), so no weight is clipped;
//   kMse: the clip c = f * max|w| for f in 0.50, 0.51, ..., 1.00 with the least squared rounding error of the
//         span (the first such f on ties), scale = c / (2^(b-1) - 1): fewer levels wasted on rare outliers.
enum class ClipRule { kMax, kMse };

struct WeightGrid {
  GridKind kind = GridKind::kUniform;
  int bits = 4;            // uniform: 2..8
  bool symmetric = true;   // uniform: w = s (c - 2^(b-1)); asymmetric: w = s (c - z) with an integer zero point
  Granularity granularity = Granularity::kChannel;
  int64_t group_size = 0;  // kGroup: columns per group (the last group of a row may be shorter)
  ThresholdRule threshold_rule = ThresholdRule::kRatio;  // ternary
  double threshold_value = 0.7;                          // ternary: ratio, sparsity or magnitude
  bool base3_packing = false;  // ternary stored as t1.6 (5 per byte) instead of t2 (4 per byte)
  ClipRule clip = ClipRule::kMax;  // uniform symmetric only
};

// A grid of the kind with everything else from `base`; the ggml kinds get their groups (32, or 256 for tq2_0), and
// a grid becoming tq2_0 gets llama.cpp's absmax rule (a threshold rule named after it replaces that).
WeightGrid WithKind(WeightGrid base, GridKind kind);
// llama.cpp's block grids by the format's name: "q8_0", "q4_0", "tq2_0", "tq1_0" (tq2_0 with base3_packing);
// std::nullopt for any other name.
std::optional<WeightGrid> GgmlGridByName(std::string_view name, WeightGrid base = {});

// Throws atq::Error naming what is wrong (bits outside 2..8, group size <= 0, sparsity outside [0, 1], an MSE
// clip on a grid other than uniform symmetric, ...).
void ValidateGrid(const WeightGrid& grid);
// The packed format holding the grid's codes: t2/t1.6, u<b>s/u<b>a, q8_0, q4_0, tq2_0 or tq1_0.
QuantType StorageType(const WeightGrid& grid);
Layout GridLayout(const WeightGrid& grid, int64_t rows, int64_t cols);
// "int4 asym g128", "int8 sym channel mse", "ternary ratio 0.7 channel", ...
std::string DescribeGrid(const WeightGrid& grid);
// Code bits per weight plus scale (and zero point) bits, for a [rows, cols] matrix.
double GridBitsPerWeight(const WeightGrid& grid, int64_t rows, int64_t cols);

// Per-row parameters of one span, each [rows, 1]: scale and zero float32, threshold float64 (|w| is compared
// with it in double, as the formats' reference quantizer does). Zero only for asymmetric grids, threshold
// only for ternary ones; the others undefined.
struct GridParams {
  torch::Tensor scale, zero, threshold;
  torch::Tensor inverse;  // ggml grids: 1 / the unrounded scale, which llama.cpp's quantizers round with
};

// Fits the grid to w ([rows, n] float32) row by row, as the reference quantizers of atq's formats do:
//   ternary: threshold by the rule, scale = mean |w| over the weights above it (0 when none is);
//   symmetric: scale = max|w| / (2^(b-1) - 1) (or the MSE clip); asymmetric: [min(w, 0), max(w, 0)] over
//   2^b - 1 steps;
//   q8_0: max|w| / 127, q4_0: the signed extreme / -8, tq2_0: max|w|, each stored (and used) rounded to float16.
// With whole_tensor, one set of parameters fits all rows (per-tensor granularity), repeated per row.
GridParams FitGrid(const WeightGrid& grid, const torch::Tensor& w, bool whole_tensor = false);

// A scale as the format stores it, and so as every quantizer must use it: float16 for llama.cpp's block grids
// (q8_0, q4_0, tq2_0/tq1_0), float32 (unchanged) for atq's formats.
torch::Tensor StoredScale(const WeightGrid& grid, const torch::Tensor& scale);

// Stored codes of w ([rows, n]) under `params` ([rows, 1]), float32 holding integers: ternary trit + 1,
// symmetric q + 2^(b-1) with q clamped to [-2^(b-1), 2^(b-1) - 1], asymmetric clamped to [0, 2^b - 1];
// q8_0 q + 128 with q in [-127, 127]; q4_0 its nibble, 0..15 for w = scale (c - 8); tq2_0 trit + 1 (clamped,
// so GPTQ's updated weights beyond the block's max stay on the grid). Rounding as llama.cpp's.
torch::Tensor RoundToCodes(const WeightGrid& grid, const torch::Tensor& w, const GridParams& params);
// The values the codes stand for, computed in float32 exactly as the packed formats dequantize them.
torch::Tensor CodesToValues(const WeightGrid& grid, const torch::Tensor& codes, const GridParams& params);

}  // namespace atq
