// Fitting and rounding to atq's uniform, ternary and ggml block grids on torch tensors.
#include "grid/weight_grid.h"

#include <cmath>

#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "util/error.h"

namespace atq {
namespace {

// The divisor a zero scale is replaced by, so rows of zeros round to the zero code instead of NaN.
torch::Tensor SafeScale(const torch::Tensor& scale) { return torch::where(scale == 0, torch::ones_like(scale), scale); }

// std::round's halfway-away-from-zero rule (torch::round rounds halves to even); x - trunc(x) is exact in float.
torch::Tensor RoundHalfAway(const torch::Tensor& x) {
  const torch::Tensor whole = torch::trunc(x);
  return torch::where((x - whole).abs() >= 0.5, whole + torch::sign(x), whole);
}

// Float64, as the format's reference quantizer compares |w| with its threshold in double.
torch::Tensor TernaryThreshold(const WeightGrid& grid, const torch::Tensor& magnitude) {  // magnitude: [rows, n]
  switch (grid.threshold_rule) {
    case ThresholdRule::kRatio:
      return grid.threshold_value * magnitude.to(torch::kFloat64).mean(1, /*keepdim=*/true);
    case ThresholdRule::kSparsity: {
      const int64_t k = SparsityCount(grid.threshold_value, magnitude.size(1));
      if (k == 0) return torch::zeros({magnitude.size(0), 1}, magnitude.options().dtype(torch::kFloat64));
      return std::get<0>(magnitude.kthvalue(k, 1, /*keepdim=*/true)).to(torch::kFloat64);
    }
    case ThresholdRule::kAbsolute:
      return torch::full({magnitude.size(0), 1}, grid.threshold_value, magnitude.options().dtype(torch::kFloat64));
    case ThresholdRule::kAbsmax:
      Fail("the absmax rule rounds by w / max|w|; it has no threshold");
  }
  Fail("unknown threshold rule");
}

// A tq2_0 grid fitted as atq's ternary grids are (a threshold from the rule, the mean kept |w| as scale).
bool FittedTernary(const WeightGrid& grid) {
  return grid.kind == GridKind::kTQ2_0 && grid.threshold_rule != ThresholdRule::kAbsmax;
}

// Guards floor(share * n) against products such as 0.29 * 100 = 28.999999999999996.
constexpr double kCountEpsilon = 1e-9;
constexpr int kClipCandidates = 51;  // 0.50, 0.51, ..., 1.00 of max |w|

torch::Tensor SymmetricCodes(const WeightGrid& grid, const torch::Tensor& w, const torch::Tensor& scale) {
  const int middle = 1 << (grid.bits - 1);
  return RoundHalfAway(w / SafeScale(scale)).clamp(-middle, middle - 1) + middle;
}

// The MSE clip of ClipRule::kMse: each row's scale among the candidates, rounded exactly as RoundToCodes does.
torch::Tensor MseClipScale(const WeightGrid& grid, const torch::Tensor& span) {  // span: [rows, n] -> [rows, 1]
  const float levels = static_cast<float>((1 << (grid.bits - 1)) - 1);
  const float middle = static_cast<float>(1 << (grid.bits - 1));
  const torch::Tensor max = span.abs().amax(1, /*keepdim=*/true);
  torch::Tensor best_scale = max / levels;
  torch::Tensor best_error = torch::full_like(max, std::numeric_limits<float>::infinity());
  for (int i = 0; i < kClipCandidates; ++i) {
    const torch::Tensor scale = max * static_cast<float>(0.5 + 0.5 * i / (kClipCandidates - 1)) / levels;
    const torch::Tensor values = scale * (SymmetricCodes(grid, span, scale) - middle);
    const torch::Tensor error = (values - span).pow(2).sum(1, /*keepdim=*/true);
    const torch::Tensor better = error < best_error;
    best_error = torch::where(better, error, best_error);
    best_scale = torch::where(better, scale, best_scale);
  }
  return best_scale;
}

}  // namespace

std::string_view ThresholdRuleName(ThresholdRule rule) {
  switch (rule) {
    case ThresholdRule::kRatio: return "ratio";
    case ThresholdRule::kSparsity: return "sparsity";
    case ThresholdRule::kAbsolute: return "magnitude";
    case ThresholdRule::kAbsmax: return "absmax";
  }
  return "?";
}

std::optional<ThresholdRule> ParseThresholdRule(std::string_view name) {
  if (name == "ratio" || name == "magnitude_relative") return ThresholdRule::kRatio;
  if (name == "sparsity") return ThresholdRule::kSparsity;
  if (name == "magnitude" || name == "magnitude_absolute") return ThresholdRule::kAbsolute;
  if (name == "absmax") return ThresholdRule::kAbsmax;
  return std::nullopt;
}

int64_t SparsityCount(double share, int64_t n) {
  const double count = std::floor(share * static_cast<double>(n) + kCountEpsilon);
  return std::clamp<int64_t>(static_cast<int64_t>(std::max(0.0, count)), 0, n);
}

bool IsGgmlGrid(GridKind kind) {
  return kind == GridKind::kQ8_0 || kind == GridKind::kQ4_0 || kind == GridKind::kTQ2_0;
}

int64_t GgmlGridBlock(GridKind kind) {
  Require(IsGgmlGrid(kind), "not one of llama.cpp's block grids");
  return Traits(kind == GridKind::kQ8_0 ? QuantType::kQ8_0 : kind == GridKind::kQ4_0 ? QuantType::kQ4_0 : QuantType::kTQ2_0)
      .block_size;
}

WeightGrid WithKind(WeightGrid base, GridKind kind) {
  if (kind == GridKind::kTQ2_0 && base.kind != GridKind::kTQ2_0) base.threshold_rule = ThresholdRule::kAbsmax;
  base.kind = kind;
  if (IsGgmlGrid(kind)) {
    base.granularity = Granularity::kGroup;
    base.group_size = GgmlGridBlock(kind);
  }
  return base;
}

std::optional<WeightGrid> GgmlGridByName(std::string_view name, WeightGrid base) {
  if (name == "q8_0") return WithKind(base, GridKind::kQ8_0);
  if (name == "q4_0") return WithKind(base, GridKind::kQ4_0);
  if (name == "tq2_0" || name == "tq1_0") {
    base.base3_packing = name == "tq1_0";
    return WithKind(base, GridKind::kTQ2_0);
  }
  return std::nullopt;
}

void ValidateGrid(const WeightGrid& grid) {
  if (IsGgmlGrid(grid.kind)) {
    Require(grid.granularity == Granularity::kGroup && grid.group_size == GgmlGridBlock(grid.kind),
            "llama.cpp's {} grid has one scale per {} weights, not {}", DescribeGrid(grid), GgmlGridBlock(grid.kind),
            grid.granularity == Granularity::kGroup ? fmt::format("{}", grid.group_size) : "a row");
    if (grid.kind != GridKind::kTQ2_0) return;
  }
  if (grid.kind == GridKind::kUniform) {
    Require(grid.bits >= 2 && grid.bits <= 8, "uniform grids have 2 to 8 bits, not {}", grid.bits);
  } else {
    const double value = grid.threshold_value;
    switch (grid.threshold_rule) {
      case ThresholdRule::kRatio:
        Require(value >= 0 && std::isfinite(value), "a ternary threshold ratio must be >= 0, not {}", value);
        break;
      case ThresholdRule::kSparsity:
        Require(value >= 0 && value <= 1, "a ternary sparsity target must be in [0, 1], not {}", value);
        break;
      case ThresholdRule::kAbsolute:
        Require(value >= 0 && std::isfinite(value), "a ternary magnitude threshold must be >= 0, not {}", value);
        break;
      case ThresholdRule::kAbsmax:
        Require(grid.kind == GridKind::kTQ2_0, "the absmax threshold is llama.cpp's rule for tq2_0/tq1_0 grids; atq's "
                "ternary grids take ratio, sparsity or magnitude");
        break;
    }
  }
  if (IsGgmlGrid(grid.kind)) return;
  Require(grid.clip == ClipRule::kMax || (grid.kind == GridKind::kUniform && grid.symmetric),
          "the MSE clip fits uniform symmetric grids, not {}", DescribeGrid(grid));
  if (grid.granularity == Granularity::kGroup) {
    Require(grid.group_size > 0, "per-group scales need a group size > 0, not {}", grid.group_size);
  }
}

QuantType StorageType(const WeightGrid& grid) {
  if (grid.kind == GridKind::kQ8_0) return QuantType::kQ8_0;
  if (grid.kind == GridKind::kQ4_0) return QuantType::kQ4_0;
  if (grid.kind == GridKind::kTQ2_0) return grid.base3_packing ? QuantType::kTQ1_0 : QuantType::kTQ2_0;
  if (grid.kind == GridKind::kTernary) return grid.base3_packing ? QuantType::kTernary1_6 : QuantType::kTernary2;
  return UniformType(grid.bits, grid.symmetric);
}

Layout GridLayout(const WeightGrid& grid, int64_t rows, int64_t cols) {
  Layout layout;
  layout.type = StorageType(grid);
  layout.rows = rows;
  layout.cols = cols;
  layout.granularity = grid.granularity;
  layout.group_size = grid.granularity == Granularity::kGroup ? grid.group_size : 0;
  return layout;
}

std::string DescribeGrid(const WeightGrid& grid) {
  const std::string granularity = grid.granularity == Granularity::kGroup ? fmt::format("g{}", grid.group_size)
                                  : grid.granularity == Granularity::kChannel ? "channel"
                                                                              : "tensor";
  if (FittedTernary(grid)) {
    return fmt::format("{} {} {}", TypeName(StorageType(grid)), ThresholdRuleName(grid.threshold_rule),
                       grid.threshold_value);
  }
  if (IsGgmlGrid(grid.kind)) return std::string(TypeName(StorageType(grid)));
  if (grid.kind == GridKind::kUniform) {
    return fmt::format("int{} {} {}{}", grid.bits, grid.symmetric ? "sym" : "asym", granularity,
                       grid.clip == ClipRule::kMse ? " mse" : "");
  }
  return fmt::format("ternary {} {} {}", ThresholdRuleName(grid.threshold_rule), grid.threshold_value, granularity);
}

double GridBitsPerWeight(const WeightGrid& grid, int64_t rows, int64_t cols) {
  return 8.0 * static_cast<double>(PackedBytes(GridLayout(grid, rows, cols))) / static_cast<double>(rows * cols);
}

GridParams FitGrid(const WeightGrid& grid, const torch::Tensor& w, bool whole_tensor) {
  const int64_t rows = w.size(0);
  const torch::Tensor span = whole_tensor ? w.reshape({1, -1}) : w;  // [rows or 1, n]
  GridParams params;
  if (IsGgmlGrid(grid.kind) && !FittedTernary(grid)) {
    torch::Tensor d;
    if (grid.kind == GridKind::kQ8_0) {
      d = span.abs().amax(1, /*keepdim=*/true) / 127;
    } else if (grid.kind == GridKind::kTQ2_0) {
      d = span.abs().amax(1, /*keepdim=*/true);
    } else {  // the weight of largest magnitude with its sign, as ggml picks it (the first on ties)
      const torch::Tensor extreme = span.gather(1, span.abs().argmax(1, /*keepdim=*/true));
      d = extreme / -8;
    }
    params.inverse = torch::where(d != 0, 1 / SafeScale(d), torch::zeros_like(d));
    params.scale = StoredScale(grid, d);
    return params;
  }
  if (grid.kind == GridKind::kTernary || FittedTernary(grid)) {
    const torch::Tensor magnitude = span.abs();
    params.threshold = TernaryThreshold(grid, magnitude);
    const torch::Tensor kept = (magnitude > params.threshold).to(torch::kFloat64);
    const torch::Tensor count = kept.sum(1, /*keepdim=*/true);
    params.scale = torch::where(count > 0, (magnitude.to(torch::kFloat64) * kept).sum(1, true) / count.clamp_min(1),
                                torch::zeros_like(count))
                       .to(torch::kFloat32);
    params.scale = StoredScale(grid, params.scale);
  } else if (grid.symmetric && grid.clip == ClipRule::kMse) {
    params.scale = MseClipScale(grid, span);
  } else if (grid.symmetric) {
    params.scale = span.abs().amax(1, /*keepdim=*/true) / static_cast<float>((1 << (grid.bits - 1)) - 1);
  } else {
    const int max_code = (1 << grid.bits) - 1;
    const torch::Tensor low = span.amin(1, true).clamp_max(0).to(torch::kFloat64);
    const torch::Tensor high = span.amax(1, true).clamp_min(0).to(torch::kFloat64);
    params.scale = ((high - low) / max_code).to(torch::kFloat32);
    params.zero = torch::where(params.scale != 0, RoundHalfAway(-low.to(torch::kFloat32) / SafeScale(params.scale)),
                               torch::zeros_like(params.scale))
                      .clamp(0, max_code);
  }
  if (whole_tensor) {
    for (torch::Tensor* tensor : {&params.scale, &params.zero, &params.threshold}) {
      if (tensor->defined()) *tensor = tensor->expand({rows, 1}).contiguous();
    }
  }
  return params;
}

torch::Tensor StoredScale(const WeightGrid& grid, const torch::Tensor& scale) {
  return IsGgmlGrid(grid.kind) ? scale.to(torch::kFloat16).to(torch::kFloat32) : scale.to(torch::kFloat32);
}

torch::Tensor RoundToCodes(const WeightGrid& grid, const torch::Tensor& w, const GridParams& params) {
  // Product and offset as separate roundings, as ggml computes them.
  if (grid.kind == GridKind::kQ8_0) return RoundHalfAway(w * params.inverse).clamp(-127, 127) + 128;
  if (grid.kind == GridKind::kQ4_0) return torch::floor((w * params.inverse) + 8.5f).clamp(0, 15);
  if (grid.kind == GridKind::kTQ2_0 && !FittedTernary(grid)) {
    return RoundHalfAway(w * params.inverse).clamp(-1, 1) + 1;
  }
  if (grid.kind == GridKind::kTernary || grid.kind == GridKind::kTQ2_0) {
    return torch::sign(w) * (w.abs() > params.threshold).to(w.scalar_type()) + 1;
  }
  if (grid.symmetric) return SymmetricCodes(grid, w, params.scale);
  const torch::Tensor level = RoundHalfAway(w / SafeScale(params.scale));
  return (level + params.zero).clamp(0, (1 << grid.bits) - 1);
}

torch::Tensor CodesToValues(const WeightGrid& grid, const torch::Tensor& codes, const GridParams& params) {
  if (grid.kind == GridKind::kQ8_0) return params.scale * (codes - 128);
  if (grid.kind == GridKind::kQ4_0) return params.scale * (codes - 8);
  if (grid.kind == GridKind::kTernary || grid.kind == GridKind::kTQ2_0) return params.scale * (codes - 1);
  if (grid.symmetric) return params.scale * (codes - static_cast<float>(1 << (grid.bits - 1)));
  return params.scale * (codes - params.zero);
}

}  // namespace atq
