// The settings of language-model post-training quantization: what each linear layer gets (LayerRecipe) and the
// run's options (calibration, methods, embeddings, mixed precision). Data only, shared by the quantizer, the
// calibration loop, mixed precision and the recipe parser.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/quant_type.h"
#include "grid/weight_grid.h"
#include "quant/method.h"

namespace atq {

struct SensitivityCache;  // mixed_precision.h

// What one linear layer gets.
struct LayerRecipe {
  std::string method = "gptq";  // a row of the method table (quant/method.h)
  WeightGrid grid;
  bool keep = false;  // left in full precision
};

// The method options (atq_calibrate, atq_ratios, gptq) come from MethodOptions.
struct LmQuantizeOptions : MethodOptions {
  LayerRecipe recipe;                          // every linear layer of the transformer blocks
  std::map<std::string, LayerRecipe> layers;   // overrides by module name ("model.layers.0.mlp.down_proj")
  bool true_sequential = false;  // within a block, quantize layers in the order they run, each on inputs from
                                 // the layers before it already quantized (one extra block pass per stage)
  // Calibration: `samples` windows of `length` tokens from `text` (SampleCalibration); samples = 0 runs none
  // (RTN and rule-based ATQ only; no output errors then).
  std::string text;
  int64_t samples = 128;
  int64_t length = 512;
  uint64_t seed = 0;
  int64_t batch_size = 8;
  std::optional<QuantType> embedding_type;  // token embedding (and a tied head); nullopt: full precision
  std::optional<QuantType> head_type;       // an untied head; nullopt: full precision
  // Mixed precision, on when mixed_candidates lists grids (mixed_precision.h's syntax, e.g. "ternary,3,4,8"):
  // every layer without its own override gets the candidate its sensitivity calls for, either the smallest
  // total sensitivity within mixed_budget average bits per weight (scales included), or, with mixed_keep_top
  // = k > 0, the last candidate for the k most sensitive layers and the first for the rest.
  std::string mixed_candidates;
  double mixed_budget = 0;
  int64_t mixed_keep_top = 0;
  std::string sensitivity = "fisher";  // "fisher" (gradient-weighted) or "output" (relative output error)
  int64_t fisher_samples = 16;         // calibration windows for the output Fisher
  // Sensitivities measured before on this same model (a sweep over budgets), reused when every setting they
  // depend on is equal; new ones are added. Null: always measured.
  SensitivityCache* sensitivity_cache = nullptr;
};

}  // namespace atq
