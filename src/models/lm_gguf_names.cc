// The GGUF <-> Hugging Face tensor-name table and the RoPE row permutation.
#include "models/lm_gguf_names.h"

#include <algorithm>
#include <cctype>
#include <regex>

#include <fmt/format.h>

#include "models/lm_family.h"
#include "util/error.h"
#include "util/strings.h"

namespace atq {
namespace {

GgufTensorNames With(GgufTensorNames names, const GgufTensorNames& changes) {
  for (const auto& [gguf, hf] : changes) {
    const auto found = std::find_if(names.begin(), names.end(), [&](const auto& entry) { return entry.first == gguf; });
    if (found != names.end()) {
      found->second = hf;
    } else {
      names.emplace_back(gguf, hf);
    }
  }
  return names;
}

// A layer number as Hugging Face writes it: digits without a leading zero.
bool IsLayerNumber(std::string_view text) {
  return !text.empty() && (text == "0" || text[0] != '0') &&
         std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

}  // namespace

const GgufTensorNames& LlamaGgufNames() {
  static const GgufTensorNames names = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"attn_norm.weight", "model.layers.{}.input_layernorm.weight"},
      {"attn_q.weight", "model.layers.{}.self_attn.q_proj.weight"},
      {"attn_k.weight", "model.layers.{}.self_attn.k_proj.weight"},
      {"attn_v.weight", "model.layers.{}.self_attn.v_proj.weight"},
      {"attn_output.weight", "model.layers.{}.self_attn.o_proj.weight"},
      {"attn_q.bias", "model.layers.{}.self_attn.q_proj.bias"},
      {"attn_k.bias", "model.layers.{}.self_attn.k_proj.bias"},
      {"attn_v.bias", "model.layers.{}.self_attn.v_proj.bias"},
      {"attn_output.bias", "model.layers.{}.self_attn.o_proj.bias"},
      {"ffn_norm.weight", "model.layers.{}.post_attention_layernorm.weight"},
      {"ffn_gate.weight", "model.layers.{}.mlp.gate_proj.weight"},
      {"ffn_up.weight", "model.layers.{}.mlp.up_proj.weight"},
      {"ffn_down.weight", "model.layers.{}.mlp.down_proj.weight"},
      {"ffn_gate.bias", "model.layers.{}.mlp.gate_proj.bias"},
      {"ffn_up.bias", "model.layers.{}.mlp.up_proj.bias"},
      {"ffn_down.bias", "model.layers.{}.mlp.down_proj.bias"},
  };
  return names;
}

const GgufTensorNames& Gemma2GgufNames() {
  static const GgufTensorNames names =
      With(LlamaGgufNames(), {{"post_attention_norm.weight", "model.layers.{}.post_attention_layernorm.weight"},
                              {"ffn_norm.weight", "model.layers.{}.pre_feedforward_layernorm.weight"},
                              {"post_ffw_norm.weight", "model.layers.{}.post_feedforward_layernorm.weight"}});
  return names;
}

const GgufTensorNames& Phi3GgufNames() {
  static const GgufTensorNames names = [] {
    GgufTensorNames fused;
    for (const auto& entry : LlamaGgufNames()) {
      const std::string& gguf = entry.first;
      if (gguf.rfind("attn_q.", 0) == 0 || gguf.rfind("attn_k.", 0) == 0 || gguf.rfind("attn_v.", 0) == 0 ||
          gguf.rfind("ffn_gate.", 0) == 0 || gguf.rfind("ffn_up.", 0) == 0) {
        continue;
      }
      fused.push_back(entry);
    }
    fused.emplace_back("attn_qkv.weight", "model.layers.{}.self_attn.qkv_proj.weight");
    fused.emplace_back("ffn_up.weight", "model.layers.{}.mlp.gate_up_proj.weight");  // [gate | up], SwiGLU's halves
    return fused;
  }();
  return names;
}

const GgufTensorNames& Gpt2GgufNames() {
  static const GgufTensorNames names = {
      {"token_embd.weight", "transformer.wte.weight"},
      {"position_embd.weight", "transformer.wpe.weight"},
      {"output_norm.weight", "transformer.ln_f.weight"},
      {"output_norm.bias", "transformer.ln_f.bias"},
      {"output.weight", "lm_head.weight"},
      {"attn_norm.weight", "transformer.h.{}.ln_1.weight"},
      {"attn_norm.bias", "transformer.h.{}.ln_1.bias"},
      {"attn_qkv.weight", "transformer.h.{}.attn.c_attn.weight"},
      {"attn_qkv.bias", "transformer.h.{}.attn.c_attn.bias"},
      {"attn_output.weight", "transformer.h.{}.attn.c_proj.weight"},
      {"attn_output.bias", "transformer.h.{}.attn.c_proj.bias"},
      {"ffn_norm.weight", "transformer.h.{}.ln_2.weight"},
      {"ffn_norm.bias", "transformer.h.{}.ln_2.bias"},
      {"ffn_up.weight", "transformer.h.{}.mlp.c_fc.weight"},
      {"ffn_up.bias", "transformer.h.{}.mlp.c_fc.bias"},
      {"ffn_down.weight", "transformer.h.{}.mlp.c_proj.weight"},
      {"ffn_down.bias", "transformer.h.{}.mlp.c_proj.bias"},
  };
  return names;
}

bool IsNormWeight(const std::string& hf_name) { return EndsWith(hf_name, "norm.weight"); }

std::string HfNameOfGguf(const std::string& gguf_name, const LmFamily& family, const std::string& path) {
  static const std::regex block(R"(blk\.(\d+)\.(.+))");
  const GgufTensorNames& names = family.gguf_names();
  const auto find = [&](const std::string& key) {
    return std::find_if(names.begin(), names.end(), [&](const auto& entry) { return entry.first == key; });
  };
  std::smatch match;
  if (std::regex_match(gguf_name, match, block)) {
    const auto it = find(match[2].str());
    Require(it != names.end() && it->second.find("{}") != std::string::npos,
            "{}: tensor '{}' has no place in a {} model", path, gguf_name, family.model_type);
    return fmt::format(fmt::runtime(it->second), match[1].str());
  }
  const auto it = find(gguf_name);
  Require(it != names.end() && it->second.find("{}") == std::string::npos,
          "{}: tensor '{}' has no place in a {} model", path, gguf_name, family.model_type);
  return it->second;
}

std::string GgufNameOfHf(const std::string& hf_name, const LmFamily& family) {
  for (const auto& [gguf, hf] : family.gguf_names()) {
    const size_t layer = hf.find("{}");
    if (layer == std::string::npos) {
      if (hf == hf_name) return gguf;
      continue;
    }
    const std::string_view prefix(hf.data(), layer), suffix(hf.data() + layer + 2, hf.size() - layer - 2);
    if (hf_name.size() > prefix.size() + suffix.size() && StartsWith(hf_name, prefix) && EndsWith(hf_name, suffix)) {
      const std::string_view number =
          std::string_view(hf_name).substr(prefix.size(), hf_name.size() - prefix.size() - suffix.size());
      if (IsLayerNumber(number)) return fmt::format("blk.{}.{}", number, gguf);
    }
  }
  Fail("tensor '{}' has no place in llama.cpp's {} model", hf_name, family.model_type);
}

torch::Tensor HalfToInterleavedRotary(const torch::Tensor& weight, int64_t heads) {
  const int64_t rows = weight.size(0);
  Require(heads > 0 && rows % heads == 0 && (rows / heads) % 2 == 0,
          "rotary weight of {} rows cannot be split into {} heads of an even size", rows, heads);
  const int64_t head_dim = rows / heads;
  // Hugging Face holds a head's first halves, then its second halves; ggml rotates pairs (2i, 2i+1).
  return weight.reshape({heads, 2, head_dim / 2, -1}).transpose(1, 2).reshape(weight.sizes()).contiguous();
}

}  // namespace atq
