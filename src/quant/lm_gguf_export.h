// A quantized language model as a llama.cpp GGUF: each linear layer in the ggml block format closest to the grid
// it was quantized to, and how far the file's weights are from atq's (ggml formats carry their own scales per
// block of 32 or 256 weights, so atq's values are re-quantized; a ternary grid with per-channel scales or groups
// of 256 lands in TQ2_0/TQ1_0 exactly up to the float16 scale).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/quant_type.h"
#include "models/causal_lm.h"
#include "models/lm_gguf_writer.h"
#include "quant/lm_quantizer.h"

namespace atq {

// The grid's own type for q8_0/q4_0 grids (exact); tq2_0 for ternary (tq1_0 with base-3 packing), q4_0 for
// 2..4 bits, q8_0 for 5..8 bits.
QuantType GgufTypeForGrid(const WeightGrid& grid);

struct LmGgufExport {
  LmGgufExport() = default;
  explicit LmGgufExport(LmGgufReport written);  // the largest error over the blocks' weights
  LmGgufReport report;  // per tensor: weight_error, ||W_gguf - W_atq||^2 / ||W_atq||^2 after llama.cpp's dequantization
  double max_requantization_error = 0;
  nlohmann::json ToJson() const;
};

// The GGUF options of a model quantized under `options`: each quantized layer in GgufTypeForGrid of its grid (or
// `linear_type` for all), kept layers f16; weights packed in that type are written byte for byte.
LmGgufOptions QuantizedGgufOptions(CausalLmImpl& model, const LmQuantizeOptions& options,
                                   std::optional<QuantType> linear_type, QuantType embedding_type);

// Writes `model` (already quantized by QuantizeLanguageModel under `options`, giving `result`) to `path` whole.
// Layers quantized on a q8_0/q4_0 grid keep their packed bytes.
LmGgufExport ExportQuantizedGguf(CausalLmImpl& model, const LmQuantizeOptions& options, const LmQuantizeResult& result,
                                 const std::string& tokenizer_dir, std::optional<QuantType> linear_type,
                                 QuantType embedding_type, const std::string& path);

}  // namespace atq
