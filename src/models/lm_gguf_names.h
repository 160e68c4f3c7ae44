// llama.cpp's GGUF tensor names and Hugging Face's, both ways, per family (each family row names its table), and
// the RoPE row order llama.cpp's converter writes q/k projections in.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "models/lm_config.h"

namespace atq {

struct LmFamily;

// llama.cpp's tensor names -> Hugging Face's; "{}" is the layer ("attn_q.weight" is "blk.{}.attn_q.weight").
using GgufTensorNames = std::vector<std::pair<std::string, std::string>>;
const GgufTensorNames& LlamaGgufNames();   // llama, mistral, qwen2, gemma
const GgufTensorNames& Gemma2GgufNames();  // the llama names with Gemma 2's norms around attention and the MLP
const GgufTensorNames& Phi3GgufNames();    // fused qkv_proj and gate_up_proj
const GgufTensorNames& Gpt2GgufNames();

// Hugging Face's name of a GGUF tensor ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight") in a
// model of `family`. Throws atq::Error naming `path` when the tensor has no place in such a model.
std::string HfNameOfGguf(const std::string& gguf_name, const LmFamily& family, const std::string& path);

// llama.cpp's name of a Hugging Face tensor ("transformer.h.0.attn.c_attn.weight" -> "blk.0.attn_qkv.weight").
// Throws atq::Error for a name with no place in llama.cpp's model of `family`.
std::string GgufNameOfHf(const std::string& hf_name, const LmFamily& family);

// atq's own GGUF keys (llama.cpp ignores them) for the Llama 3 RoPE parameters behind a rope_freqs.weight table:
// factor, low_freq_factor, high_freq_factor, original_max_position_embeddings.
inline constexpr const char* kLlama3RopeKeys[4] = {"atq.rope.llama3.factor", "atq.rope.llama3.low_freq_factor",
                                                   "atq.rope.llama3.high_freq_factor",
                                                   "atq.rope.llama3.original_context_length"};

// llama.cpp's converter stores norm weights of families with a (offset + w) RMSNorm (Gemma) as offset + w, so
// llama.cpp's plain RMSNorm runs them: true for the tensors that applies to.
bool IsNormWeight(const std::string& hf_name);

// q/k projection rows from Hugging Face's rotate-half order to the interleaved pairs ggml's RoPE rotates, as
// convert_hf_to_gguf.py permutes them; the inverse of InterleavedToHalfRotary (models/lm_loader.h).
// weight: [heads * head_dim, ...] (a bias is [heads * head_dim]).
torch::Tensor HalfToInterleavedRotary(const torch::Tensor& weight, int64_t heads);

}  // namespace atq
