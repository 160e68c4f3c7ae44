// Post-training quantization of a causal language model's linear layers, block by block (quant/lm_calibration.h):
// calibration text runs through the blocks already quantized, each layer's input Hessian is collected from what
// the quantized model actually feeds it, and every linear layer is rounded to its grid by its method from the
// method table (quant/method.h). Embeddings and the head stay in full precision unless a format is named for them.
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
#include "kernels/packed_matrix.h"
#include "models/causal_lm.h"
#include "models/lm_loader.h"
#include "quant/lm_options.h"

namespace atq {

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
  std::map<std::string, PackedWeights> packed;  // by parameter name: every quantized weight (streamed: none)
  int64_t calibration_tokens = 0;
  double calibration_seconds = 0;  // sampling and running the blocks
  double total_seconds = 0;
  nlohmann::json mixed_plan;       // null unless mixed precision chose the grids
  nlohmann::json ToJson() const;   // totals and the per-layer table
};

// Where a quantized model goes while it is being quantized, a group of tensors at a time (models/causal_lm.h
// ParameterGroups: each block once its layers are done, then the embeddings, final norm and head).
struct LmQuantizeStream {
  // The model was loaded with placeholders (LmLoadOptions::deferred) and its weights are read from here a block
  // at a time, released once written, so memory holds one block and the calibration activations, never the
  // model. Null: the model is in memory whole.
  const LmWeightSource* weights = nullptr;
  // Called with every group in order (for quantized weights, their dequantized values and packed bytes); the
  // packed bytes are dropped from the result after it returns.
  std::function<void(const std::vector<LmTensorData>& group)> write;
};

// Quantizes `model` in place: afterwards its weights are the dequantized values of `packed`, so it can be
// evaluated directly (streamed from a weight source: released as written). Shows progress per block with
// weights/s, an ETA and resident memory. Throws atq::Error for an invalid recipe (ATQ on a uniform grid, GPTQ
// without calibration, an override naming no layer, ...).
LmQuantizeResult QuantizeLanguageModel(CausalLmImpl& model, const Tokenizer& tokenizer,
                                       const LmQuantizeOptions& options, const LmQuantizeStream* stream = nullptr);

// Mixed precision's choice, made ahead of quantization: with candidates in `options`, scores the model (read
// whole from `weights` first when given, and released after), sets options.layers to the grids chosen and clears
// the candidates, so that PlannedLayouts knows every layer's grid. Returns the plan (null without candidates).
nlohmann::json ResolveMixedPrecision(CausalLmImpl& model, const Tokenizer& tokenizer, LmQuantizeOptions& options,
                                     const LmWeightSource* weights = nullptr);

// The packed layout every weight will get under `options` (linear layers not kept, embedding and head where a
// type is named for them), known before any is quantized so that streamed outputs can write their headers first.
std::map<std::string, Layout> PlannedLayouts(CausalLmImpl& model, const LmQuantizeOptions& options);

}  // namespace atq
