// Post-training quantization of a causal language model's linear layers, block by block: calibration text runs
// through the blocks already quantized, each layer's input Hessian is collected from what the quantized model
// actually feeds it, and every linear layer is rounded by RTN, ATQ or GPTQ to its grid. Embeddings and the head
// stay in full precision unless a format is named for them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "formats/quant_type.h"
#include "io/tokenizer.h"
#include "models/causal_lm.h"
#include "quant/gptq.h"
#include "grid/quantized_weight.h"
#include "grid/weight_grid.h"

namespace atq {

enum class QuantMethod { kRtn, kAtq, kGptq };
std::string_view MethodName(QuantMethod method);  // "rtn", "atq", "gptq"
std::optional<QuantMethod> ParseMethod(std::string_view name);

// What one linear layer gets.
struct SensitivityCache;  // mixed_precision.h

struct LayerRecipe {
  QuantMethod method = QuantMethod::kGptq;
  WeightGrid grid;
  bool keep = false;  // left in full precision
};

struct LmQuantizeOptions {
  LayerRecipe recipe;                          // every linear layer of the transformer blocks
  std::map<std::string, LayerRecipe> layers;   // overrides by module name ("model.layers.0.mlp.down_proj")
  bool atq_calibrate = true;                   // atq: thresholds chosen on calibration data (else the grid's rule)
  std::vector<double> atq_ratios;              // candidates for that choice (empty: DefaultTernaryRatios())
  GptqOptions gptq;
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

// A tensor in its packed format, ready for a file.
struct PackedTensor {
  Layout layout;
  std::vector<uint8_t> bytes;
};

struct LayerReport {
  std::string name;  // the weight's parameter name
  int64_t rows = 0, cols = 0;
  std::string method, grid, type;
  double bits_per_weight = 0;     // scales included
  int64_t packed_bytes = 0;
  double threshold_ratio = -1;    // ternary: mean threshold / mean |w| chosen (-1 for uniform grids)
  double mean_scale = 0;
  double sparsity = 0;            // share of weights quantized to 0
  double weight_error = 0;        // ||W - Q||^2 / ||W||^2
  double output_error = -1;       // ||(W - Q) X||^2 / ||W X||^2 on calibration inputs (-1 without calibration)
  double damp = -1;               // GPTQ's dampening (relative to mean diag H) after any raises
  double seconds = 0;
  nlohmann::json ToJson() const;
};

struct LmQuantizeResult {
  std::vector<LayerReport> layers;
  std::map<std::string, PackedTensor> packed;  // by parameter name: every quantized weight
  int64_t calibration_tokens = 0;
  double calibration_seconds = 0;  // sampling and running the blocks
  double total_seconds = 0;
  nlohmann::json mixed_plan;       // null unless mixed precision chose the grids
  nlohmann::json ToJson() const;   // totals and the per-layer table
};

// Quantizes `model` in place: afterwards its weights are the dequantized values of `packed`, so it can be
// evaluated directly. Shows progress per layer with an ETA. Throws atq::Error for an invalid recipe (ATQ
// on a uniform grid, GPTQ without calibration, an override naming no layer, ...).
LmQuantizeResult QuantizeLanguageModel(CausalLmImpl& model, const Tokenizer& tokenizer,
                                       const LmQuantizeOptions& options);

// The linear layers QuantizeLanguageModel treats, as module names in forward order.
std::vector<std::string> QuantizableLayers(CausalLmImpl& model);

struct LmLinearImpl;

// One linear layer of a block as calibration sees it: its Hessian on the inputs the block got.
struct CalibratedLayer {
  std::string name;  // module name
  LmLinearImpl* linear = nullptr;
  torch::Tensor hessian;  // [in, in]
};

// Runs the calibration windows of `options` through the model block by block: for each block, visit(block,
// layers) gets every linear layer with its Hessian; then the block's output, under whatever weights visit
// left, becomes the next block's input. Returns the calibration token count.
int64_t ForEachCalibratedBlock(CausalLmImpl& model, const Tokenizer& tokenizer, const LmQuantizeOptions& options,
                               const std::function<void(int64_t block, std::vector<CalibratedLayer>& layers)>& visit);

// Quantizes one weight [out, in] by `recipe` (RTN, ATQ or GPTQ; hessian undefined without calibration).
struct WeightQuantization {
  QuantizedWeight weight;
  double threshold_ratio = -1;
  double damp = -1;
};
WeightQuantization QuantizeWeight(const torch::Tensor& weight, const torch::Tensor& hessian, const LayerRecipe& recipe,
                                 const LmQuantizeOptions& options, const std::string& name);

}  // namespace atq
