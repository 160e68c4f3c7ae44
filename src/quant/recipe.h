// Quantization recipes: the settings of `atq quantize` as key/value pairs, read from a YAML file or given on the
// command line, with per-layer overrides. One parser for both, so a recipe file and the flags mean the same.
//
//   method: gptq            # rtn | atq | gptq
//   bits: 4                 # uniform 2..8 bits ...
//   ternary: false          # ... or ternary {-1, 0, +1}
//   format: q4_0            # ... or llama.cpp's q4_0 / q8_0 block grid (GPTQ weights a GGUF holds exactly)
//   symmetric: true
//   granularity: group      # tensor | channel | group
//   group_size: 128
//   threshold: ratio        # ternary threshold rule: ratio | sparsity | magnitude
//   threshold_value: 0.7
//   base3: false            # ternary packed 5 per byte (t1.6) instead of 4 (t2)
//   calib: data/corpus/train.txt
//   nsamples: 128
//   seqlen: 512
//   seed: 0
//   batch_size: 8
//   damp: 0.01
//   block_size: 128
//   act_order: false
//   static_groups: false
//   true_sequential: false
//   atq_calibrate: true     # atq: thresholds chosen on calibration data
//   embeddings: f32         # a format of the table for the token embedding (f32: unquantized)
//   head: f32               # the same for an untied head
//   mixed_candidates: "ternary,3,4,8"  # mixed precision: grids to choose from per layer (see mixed_precision.h)
//   mixed_budget: 3.5       # ... the least total sensitivity within this many average bits per weight, or
//   mixed_keep_top: 4       # ... the 4 most sensitive layers at the last candidate, the rest at the first
//   sensitivity: fisher     # fisher (gradient-weighted) or output (relative output error)
//   fisher_samples: 16
//   layers:                 # overrides by module name: any of the keys above that concern one layer, or "keep"
//     model.layers.0.mlp.down_proj: {bits: 8}
//     model.layers.5.self_attn.o_proj: keep
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "quant/lm_quantizer.h"

namespace YAML {
class Node;
}

namespace atq {

struct QuantizeRecipe {
  std::map<std::string, std::string> settings;                            // top-level key -> value
  std::map<std::string, std::map<std::string, std::string>> layer_settings;  // module name -> key -> value
  std::vector<std::string> kept_layers;                                   // module names left in full precision
};

// The keys a recipe may hold (for help texts and error messages).
const std::vector<std::string_view>& RecipeKeys();

// Reads a YAML recipe. Throws atq::Error "FILE: ..." on YAML syntax errors, unknown keys, nested values where
// a scalar belongs, and a layer entry that is neither a map nor "keep". Values are checked by BuildQuantizeOptions.
QuantizeRecipe ReadRecipeFile(const std::string& path);

// Adds the settings of a YAML map (top-level keys and a layers: map, as in a recipe file) to `recipe`, skipping
// `skip_key` (a sweep's config name). Throws atq::Error starting with `where` as ReadRecipeFile does.
void AddRecipeSettings(const YAML::Node& map, QuantizeRecipe& recipe, const std::string& where,
                       std::string_view skip_key = {});

// The options a recipe stands for: defaults, then the top-level settings, then each layer's settings on top
// of the top-level ones. `source` starts error messages ("recipe.yaml", "command line").
LmQuantizeOptions BuildQuantizeOptions(const QuantizeRecipe& recipe, const std::string& source);

// The recipe as JSON (stored in packed checkpoints, so a result says how it was made).
nlohmann::json RecipeJson(const QuantizeRecipe& recipe);

}  // namespace atq
