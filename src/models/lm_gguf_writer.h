// Writes a causal language model as a GGUF file llama.cpp runs: its tensor names and layouts, the metadata
// convert_hf_to_gguf.py writes for GPT-2 and Llama, the GPT-2 BPE vocabulary, and weights quantized with
// llama.cpp's reference quantizers (f32, f16, bf16, q8_0, q4_0, tq2_0, tq1_0).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "formats/quant_type.h"
#include "models/causal_lm.h"

namespace atq {

struct LmGgufOptions {
  QuantType linear_type = QuantType::kQ8_0;     // weights of the transformer blocks' linear layers
  QuantType embedding_type = QuantType::kQ8_0;  // token embedding (and lm_head when untied); position embedding F32
  // For a tensor whose row length is not a multiple of the chosen type's block size; where this one does not
  // fit either, F16 (as llama-quantize falls back).
  QuantType fallback_type = QuantType::kQ8_0;
  // Per Hugging Face tensor name (mixed precision), for any 2-D weight; the same fallback rule applies. Norm
  // weights and biases are always F32, so an override asking them to be anything else is an error.
  std::map<std::string, QuantType> overrides;
  std::string name;  // general.name; empty: the output file's name without its extension
  // Weights already in a ggml block format (q8_0, q4_0, ...; rows in Hugging Face order, [out, in]), written
  // byte for byte (rows moved to llama.cpp's rotary order where needed) instead of quantized from the floats:
  // a GPTQ result on llama.cpp's own grid keeps its exact codes and scales.
  std::map<std::string, std::pair<QuantType, std::vector<uint8_t>>> prepacked;
};

struct LmGgufTensorReport {
  std::string hf_name, gguf_name;
  QuantType requested = QuantType::kF32;  // the type the options asked for
  QuantType written = QuantType::kF32;    // the type in the file
  std::string fallback_reason;            // empty unless written != requested
  int64_t bytes = 0;                      // of the tensor's data
};

struct LmGgufReport {
  std::vector<LmGgufTensorReport> tensors;  // in file order
  int64_t file_bytes = 0;
};

// Writes `model` (GPT-2 or Llama) to `path` with the GPT-2 BPE vocabulary in `tokenizer_dir` (encoder.json +
// vocab.bpe, or vocab.json + merges.txt); the file is written under a temporary name and renamed, so an error
// leaves no file. Throws atq::Error naming the file and the problem: missing or malformed tokenizer files, a
// tokenizer larger than the model's vocabulary, a type llama.cpp models do not use, an override naming no tensor.
LmGgufReport WriteLmGguf(CausalLmImpl& model, const std::string& tokenizer_dir, const LmGgufOptions& options,
                         const std::string& path);

// Throws atq::Error naming `path` where atq does not write this model's family (or a mechanism of it) as GGUF
// yet; commands call it before the work.
void CheckGgufWritable(const LmConfig& config, const std::string& path);

}  // namespace atq
