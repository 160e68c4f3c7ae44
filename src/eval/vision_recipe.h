// Vision post-training recipes: key/value settings (the flags of `atq ptq`, the entries of an `atq pareto` file)
// read through one setting table.
//
//   name: w4a8-channel
//   fp32: false             # true: the full-precision model, nothing quantized
//   wbits: 4                # weights 2..8 or 32 (float) ...
//   ternary: false          # ... or ternary {-1, 0, +1} (threshold ternary_ratio * mean |w| per channel)
//   ternary_ratio: 0.7
//   abits: 8                # activations 2..16 or 32 (float)
//   granularity: channel    # weight scales per channel or per tensor
//   range: mse              # activation clipping: minmax | percentile | mse
//   percentile: 0.9999
//   ranking_aware: false    # ViT: query/key clips that keep the order of attention scores
//   ranking_weight: 1
//   fold_batchnorm: true
//   mixed: energy           # mixed precision: threshold | size | energy (empty: uniform)
//   candidates: W8A8,W6A6,W4A4   # per-layer choices, best first (the threshold rule needs three)
//   budget_like: W6A6       # the budget: the size or energy of this uniform setting ...
//   budget: 1.5e9           # ... or a number (bytes for size, pJ for energy)
//   high: 0.25              # threshold rule: sensitivity at the last candidate / the largest >= high -> first
//   moderate: 0.05          #   candidate, >= moderate -> second, else third
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "quant/vision_ptq.h"
#include "quant/vision_sensitivity.h"

namespace atq {

struct VisionRecipe {
  std::string name;
  std::map<std::string, std::string> settings;  // as given (results record them)
  bool full_precision = false;
  VisionPtqOptions ptq;
  std::string mixed;  // "", "threshold", "size", "energy"
  std::vector<LayerBitWidths> candidates{{8, 8, false}, {6, 6, false}, {4, 4, false}};
  double budget = 0;
  std::string budget_like;
  double high = 0.25, moderate = 0.05;
  std::optional<LayerBitWidths> first_last;  // the first and the last weight layer's widths (e.g. W8A8), if set
};

// The keys a recipe may hold.
const std::vector<std::string>& VisionRecipeKeys();

// A recipe from settings (unknown keys and bad values: atq::Error starting with `where`).
VisionRecipe ParseVisionRecipe(const std::map<std::string, std::string>& settings, const std::string& where);

// A YAML file `configs: [{name: ..., <settings>}, ...]`, optionally with `base: {<settings>}` every config starts
// from. Throws atq::Error "FILE: ..." for syntax errors, unknown keys, missing or duplicate names.
std::vector<VisionRecipe> ReadVisionRecipes(const std::string& path);

}  // namespace atq
