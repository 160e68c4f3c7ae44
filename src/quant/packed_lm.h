// atq's packed language-model checkpoint: a Hugging Face folder whose model.safetensors holds every quantized
// weight in its packed format (a U8 byte string described by "atq.packed.<name>" metadata, rows = output
// channels, so GPT-2's Conv1D weights are not transposed there), every other tensor in float16 or float32, and
// the recipe and per-layer report in the metadata ("atq.recipe", "atq.report"); config.json and the tokenizer
// files beside it. LoadLanguageModel reads it like any Hugging Face folder, dequantizing packed tensors.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "formats/quant_type.h"
#include "models/causal_lm.h"
#include "quant/lm_quantizer.h"

namespace atq {

struct PackedLmOptions {
  QuantType float_type = QuantType::kF16;  // tensors left unquantized: f16, bf16 or f32
  std::string tokenizer_dir;  // copied in: encoder.json + vocab.bpe (as vocab.json + merges.txt) or vocab.json +
                              // merges.txt or tokenizer.model; empty: none
  nlohmann::json recipe;      // stored as metadata atq.recipe
  nlohmann::json report;      // stored as metadata atq.report
};

struct PackedLmSizes {
  int64_t file_bytes = 0;    // model.safetensors
  int64_t packed_bytes = 0;  // the packed tensors
  int64_t float_bytes = 0;   // the rest
};

// Writes `dir` (created if needed; every file atomically). `packed` holds the quantized tensors by parameter
// name ([out, in] layouts); the model supplies everything else. Throws atq::Error naming the file at fault.
PackedLmSizes SavePackedLm(const CausalLmImpl& model, const std::map<std::string, PackedTensor>& packed,
                           const std::string& dir, const PackedLmOptions& options);

}  // namespace atq
