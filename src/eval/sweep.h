// Ablations in one run: quantize one language model under many recipes (methods, bits, group sizes, sparsity
// targets, mixed-precision budgets), measure each one's perplexity, and tabulate size against quality, with
// full precision as the first row.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "models/lm_loader.h"
#include "quant/recipe.h"

namespace atq {

struct SweepConfig {
  std::string name;
  QuantizeRecipe recipe;
};

// A sweep file (YAML):
//   base: {nsamples: 128}                  # settings every config starts from
//   configs:                               # explicit configs: a name plus recipe settings (layers: allowed)
//     - {name: rtn-w8, method: rtn, bits: 8, nsamples: 0}
//   grid:                                  # and/or the cartesian product of these settings on top of base
//     method: [rtn, gptq]
//     bits: [3, 4]
// Grid configs are named by their settings ("method=gptq,bits=3"). Throws atq::Error "FILE: ..." for
// malformed files, unknown settings, duplicate names or an empty sweep.
std::vector<SweepConfig> ReadSweepFile(const std::string& path);

struct SweepOptions {
  std::string model;  // any path LoadLanguageModel reads
  LmLoadOptions load;
  std::vector<SweepConfig> configs;
  std::string text;  // the text perplexity is measured on
  PerplexityOptions perplexity;
  std::string out_dir;  // sweep.json, sweep.csv, sweep.png (with plot)
  bool plot = true;
};

struct SweepRow {
  std::string name;
  nlohmann::json recipe;         // the settings (empty for full precision)
  double bits_per_weight = 16;   // quantized layers, scales included (16: the f16 model)
  int64_t quantized_weights = 0;
  int64_t quantized_bytes = 0;   // those layers packed
  int64_t model_bytes = 0;       // packed tensors plus every other parameter in f16
  double perplexity = 0;
  double ratio = 1;              // perplexity / full precision's
  int64_t scored_tokens = 0;
  double quantize_seconds = 0;  // mixed precision: without measuring sensitivities an earlier row measured
  double eval_seconds = 0;
  nlohmann::json ToJson() const;
};

// Measures full precision, then every config on a freshly loaded model; writes the table after each row (so
// an interrupted sweep keeps what it measured) and the plot of perplexity against bits per weight at the end.
// Mixed-precision configs that differ only in budget or keep-top measure the sensitivities once.
std::vector<SweepRow> RunSweep(const SweepOptions& options);

}  // namespace atq
