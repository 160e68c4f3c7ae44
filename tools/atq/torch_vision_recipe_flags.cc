// The vision recipe flags table: flag, recipe key, help, and for switches the value they set.
#include "torch_vision_recipe_flags.h"

namespace atq::cli {

const std::vector<SettingFlag>& VisionRecipeFlags() {
  static const std::vector<SettingFlag> flags = {
      {"--wbits", "wbits", "Weight bits 2..8, or 32 for float weights (default 8)", nullptr},
      {"--abits", "abits", "Activation bits 2..16, or 32 for float activations (default 8)", nullptr},
      {"--ternary", "ternary", "Ternary weights {-1, 0, +1} (ATQ threshold) instead of --wbits", "true"},
      {"--ternary-ratio", "ternary_ratio", "Ternary threshold as a multiple of each channel's mean |w| (0.7)", nullptr},
      {"--granularity", "granularity", "Weight scales per channel (default) or per tensor", nullptr},
      {"--range", "range", "Activation ranges: minmax, percentile or mse (default mse)", nullptr},
      {"--activation-grid", "activation_grid",
       "Activations of both signs: symmetric (default) or affine (unsigned codes and a zero point)", nullptr},
      {"--percentile", "percentile", "With --range percentile: the quantile of |x| kept (0.9999)", nullptr},
      {"--ranking-aware", "ranking_aware", "ViT: query/key ranges that keep the order of attention scores", "true"},
      {"--ranking-weight", "ranking_weight", "Weight of the ranking loss against the scores' error (1)", nullptr},
      {"--no-fold", "fold_batchnorm", "Keep BatchNorm separate instead of folding it into the layer before", "false"},
      {"--mixed", "mixed", "Mixed precision: threshold, size or energy (a budget)", nullptr},
      {"--candidates", "candidates", "Mixed precision choices, best first (default W8A8,W6A6,W4A4)", nullptr},
      {"--budget", "budget", "Mixed precision budget: bytes (size) or pJ per image (energy)", nullptr},
      {"--budget-like", "budget_like", "Mixed precision budget: the size or energy of this uniform setting, e.g. W6A6",
       nullptr},
      {"--high", "high", "Threshold rule: relative sensitivity at or above this gets the first candidate (0.25)",
       nullptr},
      {"--first-last", "first_last", "Widths of the first and last weight layers, e.g. W8A8 (default: as the rest)",
       nullptr},
      {"--moderate", "moderate", "Threshold rule: at or above this, the second candidate (0.05)", nullptr},
  };
  return flags;
}

}  // namespace atq::cli
