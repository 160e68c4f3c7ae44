// The shape of a causal language model (GPT-2 or Llama family), read from and written as a Hugging Face
// config.json; llama2.c and GGUF loaders fill the same struct from their own headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace atq {

// The two model builders: GPT-2 (LayerNorm, learned positions, Conv1D) and the rotary decoder every other family
// of the family table (models/lm_family.h) configures: Llama, Mistral, Qwen2, Gemma, Gemma 2, Phi-3.
enum class LmArch { kGpt2, kLlama };
std::string LmArchName(LmArch arch);  // "gpt2", "llama"

enum class LmActivation { kSilu, kGeluTanh };
// Frequency-dependent RoPE scaling; linear scaling is rope_linear_factor alone.
enum class RopeScaling { kNone, kLlama3 };

struct LmConfig {
  LmArch arch = LmArch::kLlama;
  // model_type: the row of the family table (models/lm_family.h); empty for the builder's own family (gpt2 or
  // llama), as configs built in code and from llama2.c/GGUF headers have it.
  std::string family;
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
  RopeScaling rope_scaling = RopeScaling::kNone;
  // Llama 3's frequency-dependent scaling (rope_type "llama3"): long wavelengths divided by the factor, short ones
  // kept, a smooth blend between.
  double rope_factor = 1, rope_low_freq_factor = 1, rope_high_freq_factor = 4;
  int64_t rope_original_max_positions = 8192;
  // Per-frequency divisors, head_dim / 2 of them, as a GGUF file's rope_freqs.weight holds Llama 3's scaling
  // (llama.cpp's converter computes them from the parameters above); when set they replace rope_scaling.
  std::vector<double> rope_freq_factors;
  LmActivation activation = LmActivation::kSilu;  // of the gated MLP (GPT-2: gelu_new, always)
  double norm_weight_offset = 0;   // Gemma: RMSNorm scales by (offset + w), offset 1
  bool scale_embeddings = false;   // Gemma: embeddings times sqrt(hidden_size), rounded to the model's dtype
  bool qkv_bias = false;           // biases on q/k/v only (Qwen2); attention_bias puts them on o_proj too
  int64_t sliding_window = 0;      // keys a query sees, itself included; 0: the whole causal prefix
  bool window_on_even_layers = false;  // Gemma 2: layers 0, 2, 4, ... local, the others global
  double attention_scale = 0;      // score scale; 0: head_dim^-0.5 (Gemma 2: query_pre_attn_scalar^-0.5)
  double attention_softcap = 0;    // Gemma 2: scores -> c tanh(scores / c) before the mask; 0: none
  double final_softcap = 0;        // Gemma 2: logits -> c tanh(logits / c); 0: none
  bool sandwich_norms = false;     // Gemma 2: norms after attention and around the MLP as well
  bool fused_projections = false;  // Phi-3: the checkpoint stores qkv_proj and gate_up_proj fused
  bool scale_attn_by_inverse_layer_idx = false;  // GPT-2 option: scores also divided by (layer + 1)
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

// A tensor of a Hugging Face checkpoint of the rotary families: its name and shape as transformers saves it
// (Phi-3's projections fused, a tied head left out).
struct LmCheckpointTensor {
  std::string name;
  std::vector<int64_t> shape;
};
// Every tensor such a checkpoint of `config` holds, layer by layer; throws atq::Error for GPT-2 (whose
// Conv1D checkpoints are not listed here).
std::vector<LmCheckpointTensor> LmCheckpointTensors(const LmConfig& config);

// Parses a Hugging Face config.json of any family of the family table (models/lm_family.h), by model_type or
// else by architectures. Throws atq::Error naming `file` for an unknown family (listing the known ones), a missing
// key, inconsistent sizes (hidden not divisible by heads, heads not divisible by KV heads) or a setting atq does
// not run (an unsupported RoPE scaling, activation or attention variant).
LmConfig ParseHfConfig(const nlohmann::json& config, const std::string& file);
LmConfig ReadHfConfig(const std::string& path);  // path: config.json

// The config.json transformers needs to load the model atq wrote.
nlohmann::json HfConfigJson(const LmConfig& config);

// Checks sizes are positive and consistent; throws atq::Error prefixed with `what`.
void ValidateLmConfig(const LmConfig& config, const std::string& what);

}  // namespace atq
