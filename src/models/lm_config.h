// The shape of a causal language model (GPT-2 or Llama family), read from and written as a Hugging Face
// config.json; llama2.c and GGUF loaders fill the same struct from their own headers.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace atq {

enum class LmArch { kGpt2, kLlama };
std::string LmArchName(LmArch arch);  // "gpt2", "llama"

struct LmConfig {
  LmArch arch = LmArch::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;        // == num_heads: multi-head; 1: multi-query; between: grouped-query
  int64_t head_dim = 0;            // usually hidden_size / num_heads
  int64_t intermediate_size = 0;   // MLP width
  int64_t max_positions = 0;       // GPT-2: size of the learned position table; Llama: trained context
  double norm_eps = 1e-5;          // LayerNorm (GPT-2) or RMSNorm (Llama) epsilon
  double rope_theta = 10000.0;     // Llama only
  double rope_linear_factor = 1;   // Llama "linear" RoPE scaling: positions divided by this
  bool tied_embeddings = true;     // the head reuses the token embedding
  bool attention_bias = false;     // Llama q/k/v/o biases (GPT-2 always has biases)
  bool mlp_bias = false;           // Llama gate/up/down biases
  int32_t bos_id = -1;
  int32_t eos_id = -1;

  int64_t ParameterCount() const;
};

// The most positions a sequence may span. GPT-2's position table ends at max_positions. Rotary models compute
// their positions, and llama.cpp runs them past the context they were trained at (its llama2.c converter even
// writes 128 for stories260K, trained at 512), so atq allows kRotaryContextFactor times the trained context, with
// a warning from the callers; beyond that the figures mean little and attention memory grows with its square.
constexpr int64_t kRotaryContextFactor = 4;
int64_t UsableContext(const LmConfig& config);

// Parses a Hugging Face config.json (model_type "gpt2" or "llama", or architectures naming GPT2LMHeadModel /
// LlamaForCausalLM). Throws atq::Error naming `file` for an unknown architecture, a missing key, inconsistent
// sizes (hidden not divisible by heads, heads not divisible by KV heads) or an unsupported RoPE scaling.
LmConfig ParseHfConfig(const nlohmann::json& config, const std::string& file);
LmConfig ReadHfConfig(const std::string& path);  // path: config.json

// The config.json transformers needs to load the model atq wrote.
nlohmann::json HfConfigJson(const LmConfig& config);

// Checks sizes are positive and consistent; throws atq::Error prefixed with `what`.
void ValidateLmConfig(const LmConfig& config, const std::string& what);

}  // namespace atq
