// Loads a causal language model and its tokenizer from any file atq reads: a Hugging Face folder (config.json +
// model.safetensors or a sharded index; F32/F16/BF16), a llama2.c .bin checkpoint, or a GGUF file written by
// llama.cpp (llama and gpt2 architectures; F32, F16, BF16, Q8_0, Q4_0, TQ1_0, TQ2_0 tensors dequantized).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "io/tokenizer.h"
#include "kernels/packed_matrix.h"
#include "models/causal_lm.h"

namespace atq {

// The "atq.format" metadata of a packed language-model checkpoint (quant/packed_lm.h writes it). The loader
// refuses any other atq-packed-lm version: a newer layout read by this reader would be silent garbage.
inline constexpr std::string_view kPackedLmFormat = "atq-packed-lm/1";

struct LmLoadOptions {
  // A tokenizer overriding the default: a folder with encoder.json + vocab.bpe (or vocab.json + merges.txt),
  // a SentencePiece .model, a llama2.c tokenizer .bin, or a .gguf. Empty: the model's own (GGUF vocabulary;
  // tokenizer files in the Hugging Face folder; tokenizer.bin or tok<vocab>.bin beside a llama2.c file), else
  // GPT-2's files from the set-up's data folder for a 50257-token vocabulary.
  std::string tokenizer;
  torch::Dtype dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;
  // Keep the bytes of quantized 2-D weights the packed kernels run (LanguageModel::packed) instead of dequantizing
  // them: their float parameters stay zero until the packed runtime (runtime/packed_runtime.h) attaches the bytes.
  bool keep_packed = false;
  // Load weights holding NaN or infinity instead of refusing them (to inspect a broken checkpoint).
  bool allow_nonfinite = false;
};

struct LanguageModel {
  std::shared_ptr<CausalLmImpl> model;  // eval mode
  std::unique_ptr<Tokenizer> tokenizer;
  std::string path;
  std::string format;           // "huggingface", "llama2c", "gguf"
  std::string tokenizer_source;  // where the tokenizer came from
  std::map<std::string, PackedWeights> packed;  // with keep_packed: Hugging Face parameter name -> packed bytes
  nlohmann::json Describe() const;  // architecture, sizes, parameter count, format, tokenizer
};

// Throws atq::Error naming the file and tensor at fault: unknown architecture, a missing or misshapen tensor,
// a tensor the architecture has no place for, a type atq cannot dequantize.
LanguageModel LoadLanguageModel(const std::string& path, const LmLoadOptions& options = {});

// Copies `weights` (Hugging Face names, atq's [out, in] linear layout) into `model`; every parameter must be
// there with its exact shape, and every weight must have a place. `source` starts error messages.
void AssignLmWeights(CausalLmImpl& model, std::map<std::string, torch::Tensor> weights, const std::string& source);

// q/k projection rows from the interleaved RoPE order (llama2.c, ggml) to Hugging Face's rotate-half order.
// weight: [heads * head_dim, in].
torch::Tensor InterleavedToHalfRotary(const torch::Tensor& weight, int64_t heads);

}  // namespace atq
