// The family rows and each family's own config keys (transformers 4.46's configuration classes and modeling files
// are the reference; the arch-zoo fixtures hold their logits).
#include "models/lm_family.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "util/error.h"

namespace atq {
namespace {

using json = nlohmann::json;

template <typename T>
T Get(const json& config, const char* key, T fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  return config[key].get<T>();
}

// "hidden_act" / "hidden_activation": the gated MLP's activation.
LmActivation ReadActivation(const json& config, const std::string& file, const char* fallback) {
  std::string name = Get<std::string>(config, "hidden_activation", Get<std::string>(config, "hidden_act", fallback));
  if (name == "silu" || name == "swish") return LmActivation::kSilu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new") return LmActivation::kGeluTanh;
  Fail("{}: activation \"{}\" is not supported (atq runs silu and gelu_pytorch_tanh)", file, name);
}

void WriteActivation(const LmConfig& c, json& out) {
  out["hidden_act"] = c.activation == LmActivation::kSilu ? "silu" : "gelu_pytorch_tanh";
}

int64_t ReadWindow(const json& config, const std::string& file) {
  const int64_t window = Get<int64_t>(config, "sliding_window", 0);
  Require(window >= 0, "{}: sliding_window must be a positive number of tokens, got {}", file, window);
  return window;
}

void ReadLlama(const json& config, const std::string& file, LmConfig& out) {
  out.activation = ReadActivation(config, file, "silu");
  out.attention_bias = Get<bool>(config, "attention_bias", false);
  out.mlp_bias = Get<bool>(config, "mlp_bias", false);
}
void WriteLlama(const LmConfig& c, json& out) {
  WriteActivation(c, out);
  out["attention_bias"] = c.attention_bias;
  out["mlp_bias"] = c.mlp_bias;
}

void ReadMistral(const json& config, const std::string& file, LmConfig& out) {
  out.activation = ReadActivation(config, file, "silu");
  out.sliding_window = ReadWindow(config, file);
}
void WriteMistral(const LmConfig& c, json& out) {
  WriteActivation(c, out);
  out["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
}

void ReadQwen2(const json& config, const std::string& file, LmConfig& out) {
  out.activation = ReadActivation(config, file, "silu");
  out.qkv_bias = true;
  Require(!Get<bool>(config, "use_sliding_window", false),
          "{}: Qwen2's use_sliding_window (windows from layer max_window_layers on) is not supported", file);
}
void WriteQwen2(const LmConfig& c, json& out) {
  WriteActivation(c, out);
  out["use_sliding_window"] = false;
}

void ReadGemma(const json& config, const std::string& file, LmConfig& out) {
  out.activation = ReadActivation(config, file, "gelu_pytorch_tanh");
  out.norm_weight_offset = 1;
  out.scale_embeddings = true;
}
void WriteGemma(const LmConfig& c, json& out) {
  WriteActivation(c, out);
  out["hidden_activation"] = out["hidden_act"];
}

void ReadGemma2(const json& config, const std::string& file, LmConfig& out) {
  ReadGemma(config, file, out);
  out.sandwich_norms = true;
  out.sliding_window = ReadWindow(config, file);
  out.window_on_even_layers = true;
  const double scalar = Get<double>(config, "query_pre_attn_scalar", static_cast<double>(out.head_dim));
  Require(std::isfinite(scalar) && scalar > 0, "{}: query_pre_attn_scalar must be positive, got {}", file, scalar);
  out.attention_scale = 1.0 / std::sqrt(scalar);
  out.attention_softcap = Get<double>(config, "attn_logit_softcapping", 0.0);
  out.final_softcap = Get<double>(config, "final_logit_softcapping", 0.0);
  for (double cap : {out.attention_softcap, out.final_softcap}) {
    Require(std::isfinite(cap) && cap >= 0, "{}: soft-capping must be a finite number >= 0, got {}", file, cap);
  }
}
void WriteGemma2(const LmConfig& c, json& out) {
  WriteGemma(c, out);
  out["sliding_window"] = c.sliding_window;
  out["query_pre_attn_scalar"] = 1.0 / (c.attention_scale * c.attention_scale);
  out["attn_logit_softcapping"] = c.attention_softcap > 0 ? json(c.attention_softcap) : json(nullptr);
  out["final_logit_softcapping"] = c.final_softcap > 0 ? json(c.final_softcap) : json(nullptr);
}

void ReadPhi3(const json& config, const std::string& file, LmConfig& out) {
  out.activation = ReadActivation(config, file, "silu");
  out.fused_projections = true;
  out.sliding_window = ReadWindow(config, file);
}
void WritePhi3(const LmConfig& c, json& out) {
  WriteActivation(c, out);
  out["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
}

// Phi-3: qkv_proj rows are [q | k | v], gate_up_proj rows [gate | up].
std::vector<std::pair<std::string, torch::Tensor>> SplitPhi3(const LmConfig& c, const std::string& name,
                                                             const torch::Tensor& tensor) {
  const auto replace = [&](const std::string& from, const std::string& to) {
    return name.substr(0, name.size() - from.size()) + to;
  };
  const auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("self_attn.qkv_proj.weight")) {
    const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
    Require(tensor.dim() == 2 && tensor.size(0) == q + 2 * kv, "{}: shape [{}] is not [{} + 2x{}, hidden]", name,
            fmt::join(tensor.sizes(), ", "), q, kv);
    const auto parts = tensor.split_with_sizes({q, kv, kv}, 0);
    const std::string base = "self_attn.qkv_proj.weight";
    return {{replace(base, "self_attn.q_proj.weight"), parts[0].contiguous()},
            {replace(base, "self_attn.k_proj.weight"), parts[1].contiguous()},
            {replace(base, "self_attn.v_proj.weight"), parts[2].contiguous()}};
  }
  if (ends_with("mlp.gate_up_proj.weight")) {
    const int64_t inner = c.intermediate_size;
    Require(tensor.dim() == 2 && tensor.size(0) == 2 * inner, "{}: shape [{}] is not [2x{}, hidden]", name,
            fmt::join(tensor.sizes(), ", "), inner);
    const auto parts = tensor.split(inner, 0);
    const std::string base = "mlp.gate_up_proj.weight";
    return {{replace(base, "mlp.gate_proj.weight"), parts[0].contiguous()},
            {replace(base, "mlp.up_proj.weight"), parts[1].contiguous()}};
  }
  return {};
}

void FusePhi3(std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  const auto fuse = [&](const std::vector<std::string>& parts, const std::string& fused) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const std::string& name = tensors[i].first;
      const std::string& first = parts.front();
      if (name.size() < first.size() || name.compare(name.size() - first.size(), first.size(), first) != 0) {
        out.push_back(tensors[i]);
        continue;
      }
      const std::string prefix = name.substr(0, name.size() - first.size());
      std::vector<torch::Tensor> pieces;
      for (const std::string& part : parts) {
        const auto found = std::find_if(tensors.begin(), tensors.end(), [&](const auto& t) { return t.first == prefix + part; });
        Require(found != tensors.end(), "{}: no {} to fuse into {}", prefix, part, fused);
        pieces.push_back(found->second);
      }
      out.emplace_back(prefix + fused, torch::cat(pieces, 0).contiguous());
    }
    // Drop the other parts, now inside the fused tensors.
    std::vector<std::pair<std::string, torch::Tensor>> kept;
    for (auto& entry : out) {
      bool is_part = false;
      for (size_t p = 1; p < parts.size(); ++p) {
        const std::string& part = parts[p];
        is_part |= entry.first.size() >= part.size() &&
                   entry.first.compare(entry.first.size() - part.size(), part.size(), part) == 0;
      }
      if (!is_part) kept.push_back(std::move(entry));
    }
    tensors = std::move(kept);
  };
  fuse({"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}, "self_attn.qkv_proj.weight");
  fuse({"mlp.gate_proj.weight", "mlp.up_proj.weight"}, "mlp.gate_up_proj.weight");
}

void ReadNothing(const json&, const std::string&, LmConfig&) {}
void WriteNothing(const LmConfig&, json&) {}

}  // namespace

const std::vector<LmFamily>& LmFamilies() {
  static const std::vector<LmFamily> families = {
      {"gpt2", "GPT2LMHeadModel", LmArch::kGpt2, "gpt2", Gpt2GgufNames, true, false, ReadNothing, WriteNothing, nullptr,
       nullptr},
      {"llama", "LlamaForCausalLM", LmArch::kLlama, "llama", LlamaGgufNames, false, true, ReadLlama, WriteLlama,
       nullptr, nullptr},
      {"mistral", "MistralForCausalLM", LmArch::kLlama, "llama", LlamaGgufNames, false, true, ReadMistral,
       WriteMistral, nullptr, nullptr},
      {"qwen2", "Qwen2ForCausalLM", LmArch::kLlama, "qwen2", LlamaGgufNames, false, false, ReadQwen2, WriteQwen2,
       nullptr, nullptr},
      {"gemma", "GemmaForCausalLM", LmArch::kLlama, "gemma", LlamaGgufNames, true, false, ReadGemma, WriteGemma,
       nullptr, nullptr},
      {"gemma2", "Gemma2ForCausalLM", LmArch::kLlama, "gemma2", Gemma2GgufNames, true, false, ReadGemma2, WriteGemma2,
       nullptr, nullptr},
      {"phi3", "Phi3ForCausalLM", LmArch::kLlama, "phi3", Phi3GgufNames, false, false, ReadPhi3, WritePhi3, SplitPhi3,
       FusePhi3},
  };
  return families;
}

std::string SupportedFamilies() {
  std::string names;
  for (const LmFamily& family : LmFamilies()) names += (names.empty() ? "" : ", ") + std::string(family.model_type);
  return names;
}

const LmFamily& FamilyByModelType(std::string_view model_type, const std::string& what) {
  for (const LmFamily& family : LmFamilies()) {
    if (family.model_type == model_type) return family;
  }
  Fail("{}: unknown model_type \"{}\"; atq runs {}", what, model_type, SupportedFamilies());
}

const LmFamily& FamilyByGgufArch(std::string_view gguf_arch, const std::string& what) {
  std::string known;
  for (const LmFamily& family : LmFamilies()) {
    if (family.gguf_arch == gguf_arch) return family;  // the first row of an architecture (llama, not mistral)
    if (known.find(family.gguf_arch) == std::string::npos) known += (known.empty() ? "" : ", ") + std::string(family.gguf_arch);
  }
  Fail("{}: unknown architecture '{}'; atq reads {} GGUF files", what, gguf_arch, known);
}

const LmFamily& FamilyOf(const LmConfig& config) {
  if (config.family.empty()) return FamilyByModelType(config.arch == LmArch::kGpt2 ? "gpt2" : "llama", "model config");
  const LmFamily& family = FamilyByModelType(config.family, "model config");
  Require(family.builder == config.arch, "model config: family {} is not built as {}", config.family,
          LmArchName(config.arch));
  return family;
}

const LmFamily& FamilyOfConfig(const json& config, const std::string& file) {
  const std::string model_type = Get<std::string>(config, "model_type", "");
  if (!model_type.empty()) return FamilyByModelType(model_type, file);
  if (config.contains("architectures") && config["architectures"].is_array()) {
    for (const json& name : config["architectures"]) {
      for (const LmFamily& family : LmFamilies()) {
        if (name.is_string() && name.get<std::string>() == family.hf_class) return family;
      }
    }
  }
  Fail("{}: no model_type and no known architectures entry; atq runs {}", file, SupportedFamilies());
}

}  // namespace atq
