// llama.cpp's GGUF tensor names for GPT-2 and Llama weights and Hugging Face's, both ways, and the RoPE row order
// llama.cpp's converter writes q/k projections in.
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "models/lm_config.h"

namespace atq {

// Hugging Face's name of a GGUF tensor ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight").
// Throws atq::Error naming `path` when the tensor has no place in an `arch` model.
std::string HfNameOfGguf(const std::string& gguf_name, LmArch arch, const std::string& path);

// llama.cpp's name of a Hugging Face tensor ("transformer.h.0.attn.c_attn.weight" -> "blk.0.attn_qkv.weight").
// Throws atq::Error for a name with no place in llama.cpp's `arch` model.
std::string GgufNameOfHf(const std::string& hf_name, LmArch arch);

// q/k projection rows from Hugging Face's rotate-half order to the interleaved pairs ggml's RoPE rotates, as
// convert_hf_to_gguf.py permutes them; the inverse of InterleavedToHalfRotary (models/lm_loader.h).
// weight: [heads * head_dim, ...] (a bias is [heads * head_dim]).
torch::Tensor HalfToInterleavedRotary(const torch::Tensor& weight, int64_t heads);

}  // namespace atq
