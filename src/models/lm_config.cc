// Hugging Face config.json <-> LmConfig.
#include "models/lm_config.h"

#include <cmath>

#include <fstream>

#include <fmt/format.h>

#include "io/strict_json.h"
#include "models/lm_family.h"
#include "util/error.h"

namespace atq {
namespace {

using json = nlohmann::json;

const json& Key(const json& config, const char* key, const std::string& file) {
  Require(config.contains(key) && !config[key].is_null(), "{}: config has no \"{}\"", file, key);
  return config[key];
}

int64_t PositiveInt(const json& config, const char* key, const std::string& file) {
  const json& value = Key(config, key, file);
  Require(value.is_number_integer() && value.get<int64_t>() > 0, "{}: \"{}\" must be a positive integer, got {}",
          file, key, value.dump());
  return value.get<int64_t>();
}

template <typename T>
T Optional(const json& config, const char* key, T fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  return config[key].get<T>();
}

int32_t TokenId(const json& config, const char* key) {
  if (!config.contains(key) || !config[key].is_number_integer()) return -1;  // null, absent, or a list
  return config[key].get<int32_t>();
}

// RoPE settings: "rope_theta" (transformers < 5) or "rope_parameters" / "rope_scaling" with a rope_type.
void ReadRope(const json& config, const std::string& file, LmConfig& out) {
  out.rope_theta = Optional<double>(config, "rope_theta", 10000.0);
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!config.contains(key) || config[key].is_null()) continue;
    const json& rope = config[key];
    Require(rope.is_object(), "{}: \"{}\" must be an object", file, key);
    out.rope_theta = Optional<double>(rope, "rope_theta", out.rope_theta);
    const std::string type = Optional<std::string>(rope, "rope_type", Optional<std::string>(rope, "type", "default"));
    if (type == "linear") {
      out.rope_linear_factor = Optional<double>(rope, "factor", 1.0);
      Require(out.rope_linear_factor > 0, "{}: linear RoPE factor must be positive", file);
    } else if (type == "llama3") {
      out.rope_scaling = RopeScaling::kLlama3;
      out.rope_factor = Optional<double>(rope, "factor", 8.0);
      out.rope_low_freq_factor = Optional<double>(rope, "low_freq_factor", 1.0);
      out.rope_high_freq_factor = Optional<double>(rope, "high_freq_factor", 4.0);
      out.rope_original_max_positions = Optional<int64_t>(rope, "original_max_position_embeddings", 8192);
      Require(out.rope_factor > 0 && out.rope_low_freq_factor > 0 &&
                  out.rope_high_freq_factor > out.rope_low_freq_factor && out.rope_original_max_positions > 0,
              "{}: llama3 RoPE scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
              "original_max_position_embeddings > 0",
              file);
    } else {
      Require(type == "default", "{}: RoPE type \"{}\" is not supported (atq reads default, linear and llama3)", file,
              type);
    }
  }
  Require(out.rope_theta > 0, "{}: rope_theta must be positive, got {}", file, out.rope_theta);
}

}  // namespace

std::string LmArchName(LmArch arch) { return arch == LmArch::kGpt2 ? "gpt2" : "llama"; }

int64_t UsableContext(const LmConfig& config) {
  return config.arch == LmArch::kGpt2 ? config.max_positions : kRotaryContextFactor * config.max_positions;
}

int64_t LmConfig::ParameterCount() const {
  const int64_t q = num_heads * head_dim, kv = num_kv_heads * head_dim;
  int64_t per_layer = 0;
  if (arch == LmArch::kGpt2) {
    per_layer = 4 * hidden_size                                 // two LayerNorms
                + hidden_size * 3 * hidden_size + 3 * hidden_size  // c_attn
                + hidden_size * hidden_size + hidden_size          // c_proj
                + 2 * hidden_size * intermediate_size + intermediate_size + hidden_size;  // MLP
  } else {
    per_layer = 2 * hidden_size + hidden_size * (q + 2 * kv) + q * hidden_size + 3 * hidden_size * intermediate_size;
    if (attention_bias) per_layer += q + 2 * kv + hidden_size;
    if (qkv_bias && !attention_bias) per_layer += q + 2 * kv;
    if (mlp_bias) per_layer += 2 * intermediate_size + hidden_size;
    if (sandwich_norms) per_layer += 2 * hidden_size;
  }
  int64_t total = vocab_size * hidden_size + num_layers * per_layer;
  total += arch == LmArch::kGpt2 ? max_positions * hidden_size + 2 * hidden_size : hidden_size;
  if (!tied_embeddings) total += vocab_size * hidden_size;
  return total;
}

std::vector<LmCheckpointTensor> LmCheckpointTensors(const LmConfig& c) {
  Require(c.arch == LmArch::kLlama, "listing checkpoint tensors: {} checkpoints are not listed (rotary families only)",
          LmArchName(c.arch));
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim, h = c.hidden_size;
  std::vector<LmCheckpointTensor> tensors = {{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const std::string p = fmt::format("model.layers.{}.", layer);
    const auto add = [&](const std::string& name, std::vector<int64_t> shape) { tensors.push_back({p + name, shape}); };
    add("input_layernorm.weight", {h});
    if (c.fused_projections) {
      add("self_attn.qkv_proj.weight", {q + 2 * kv, h});
    } else {
      add("self_attn.q_proj.weight", {q, h});
      if (c.attention_bias || c.qkv_bias) add("self_attn.q_proj.bias", {q});
      add("self_attn.k_proj.weight", {kv, h});
      if (c.attention_bias || c.qkv_bias) add("self_attn.k_proj.bias", {kv});
      add("self_attn.v_proj.weight", {kv, h});
      if (c.attention_bias || c.qkv_bias) add("self_attn.v_proj.bias", {kv});
    }
    add("self_attn.o_proj.weight", {h, q});
    if (c.attention_bias) add("self_attn.o_proj.bias", {h});
    add("post_attention_layernorm.weight", {h});
    if (c.sandwich_norms) {
      add("pre_feedforward_layernorm.weight", {h});
      add("post_feedforward_layernorm.weight", {h});
    }
    if (c.fused_projections) {
      add("mlp.gate_up_proj.weight", {2 * c.intermediate_size, h});
    } else {
      add("mlp.gate_proj.weight", {c.intermediate_size, h});
      if (c.mlp_bias) add("mlp.gate_proj.bias", {c.intermediate_size});
      add("mlp.up_proj.weight", {c.intermediate_size, h});
      if (c.mlp_bias) add("mlp.up_proj.bias", {c.intermediate_size});
    }
    add("mlp.down_proj.weight", {h, c.intermediate_size});
    if (c.mlp_bias) add("mlp.down_proj.bias", {h});
  }
  tensors.push_back({"model.norm.weight", {h}});
  if (!c.tied_embeddings) tensors.push_back({"lm_head.weight", {c.vocab_size, h}});
  return tensors;
}

// Upper limits on a config's sizes, checked before anything is allocated from them. Each is several times the
// largest published model's (Llama 3.1 405B: 126 layers, hidden 16384, MLP 53248, 128 heads, 128k context;
// Gemma: 256k vocabulary), so no real model is refused, while a hostile or mistyped value (2^40) is named here
// instead of failing inside an allocator. Products of these limits stay well inside int64.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHidden = int64_t{1} << 17;
constexpr int64_t kMaxIntermediate = int64_t{1} << 19;
constexpr int64_t kMaxVocab = int64_t{1} << 22;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxPositions = int64_t{1} << 24;

void ValidateLmConfig(const LmConfig& c, const std::string& what) {
  struct Size {
    const char* name;
    int64_t value, limit;
  };
  for (const Size& size : {Size{"vocab_size", c.vocab_size, kMaxVocab}, Size{"hidden_size", c.hidden_size, kMaxHidden},
                           Size{"num_layers", c.num_layers, kMaxLayers}, Size{"num_heads", c.num_heads, kMaxHeads},
                           Size{"num_kv_heads", c.num_kv_heads, kMaxHeads}, Size{"head_dim", c.head_dim, kMaxHeadDim},
                           Size{"intermediate_size", c.intermediate_size, kMaxIntermediate},
                           Size{"max_positions", c.max_positions, kMaxPositions}}) {
    Require(size.value > 0, "{}: {} must be positive, got {}", what, size.name, size.value);
    Require(size.value <= size.limit, "{}: {} is {}, beyond atq's limit of {} (no published model comes near it)",
            what, size.name, size.value, size.limit);
  }
  Require(c.num_heads % c.num_kv_heads == 0, "{}: {} attention heads are not a multiple of {} KV heads", what,
          c.num_heads, c.num_kv_heads);
  if (c.arch == LmArch::kGpt2) {
    Require(c.num_heads * c.head_dim == c.hidden_size && c.num_kv_heads == c.num_heads,
            "{}: GPT-2 needs hidden size {} = heads {} x head dim {}", what, c.hidden_size, c.num_heads, c.head_dim);
  }
  Require(c.head_dim % 2 == 0 || c.arch == LmArch::kGpt2, "{}: RoPE needs an even head dim, got {}", what,
          c.head_dim);
  Require(std::isfinite(c.norm_eps) && c.norm_eps > 0 && c.norm_eps < 1,
          "{}: norm epsilon must be a finite number in (0, 1), got {}", what, c.norm_eps);
  Require(std::isfinite(c.rope_theta) && c.rope_theta > 1, "{}: rope base (rope_theta) must be a finite number > 1, got {}",
          what, c.rope_theta);
  Require(std::isfinite(c.rope_linear_factor) && c.rope_linear_factor > 0,
          "{}: rope scaling factor must be a finite positive number, got {}", what, c.rope_linear_factor);
}

LmConfig ParseHfConfig(const json& config, const std::string& file) {
  Require(config.is_object(), "{}: config.json must be a JSON object", file);
  LmConfig out;
  const LmFamily& family = FamilyOfConfig(config, file);
  out.family = family.model_type;
  out.arch = family.builder;
  out.vocab_size = PositiveInt(config, "vocab_size", file);
  out.bos_id = TokenId(config, "bos_token_id");
  out.eos_id = TokenId(config, "eos_token_id");
  if (out.arch == LmArch::kGpt2) {
    out.hidden_size = PositiveInt(config, "n_embd", file);
    out.num_layers = PositiveInt(config, "n_layer", file);
    out.num_heads = PositiveInt(config, "n_head", file);
    out.num_kv_heads = out.num_heads;
    out.max_positions = PositiveInt(config, "n_positions", file);
    out.intermediate_size = Optional<int64_t>(config, "n_inner", 4 * out.hidden_size);
    out.norm_eps = Optional<double>(config, "layer_norm_epsilon", 1e-5);
    out.tied_embeddings = Optional<bool>(config, "tie_word_embeddings", family.tied_by_default);
    out.attention_bias = out.mlp_bias = true;
    const std::string activation = Optional<std::string>(config, "activation_function", "gelu_new");
    Require(activation == "gelu_new", "{}: GPT-2 activation \"{}\" is not supported (atq runs gelu_new)", file,
            activation);
    // reorder_and_upcast_attn only changes the precision of the scores, which atq computes in float32 anyway.
    out.scale_attn_by_inverse_layer_idx = Optional<bool>(config, "scale_attn_by_inverse_layer_idx", false);
    Require(Optional<bool>(config, "scale_attn_weights", true),
            "{}: GPT-2 without scaled attention (scale_attn_weights false) is not supported", file);
    Require(out.hidden_size % out.num_heads == 0, "{}: n_embd {} is not a multiple of n_head {}", file,
            out.hidden_size, out.num_heads);
    out.head_dim = out.hidden_size / out.num_heads;
  } else {
    out.hidden_size = PositiveInt(config, "hidden_size", file);
    out.num_layers = PositiveInt(config, "num_hidden_layers", file);
    out.num_heads = PositiveInt(config, "num_attention_heads", file);
    out.num_kv_heads = Optional<int64_t>(config, "num_key_value_heads", out.num_heads);
    out.intermediate_size = PositiveInt(config, "intermediate_size", file);
    out.max_positions = Optional<int64_t>(config, "max_position_embeddings", 2048);
    out.norm_eps = Optional<double>(config, "rms_norm_eps", 1e-6);
    // transformers leaves out keys equal to the class default.
    out.tied_embeddings = Optional<bool>(config, "tie_word_embeddings", family.tied_by_default);
    Require(out.hidden_size % out.num_heads == 0 || config.contains("head_dim"),
            "{}: hidden_size {} is not a multiple of num_attention_heads {}", file, out.hidden_size, out.num_heads);
    out.head_dim = Optional<int64_t>(config, "head_dim", out.hidden_size / out.num_heads);
    ReadRope(config, file, out);
    family.read_config(config, file, out);
  }
  ValidateLmConfig(out, file);
  return out;
}

LmConfig ReadHfConfig(const std::string& path) {
  const json config = ReadStrictJsonFile(path);
  try {
    return ParseHfConfig(config, path);
  } catch (const json::exception& e) {  // a value of the wrong JSON type
    Fail("{}: {}", path, e.what());
  }
}

json HfConfigJson(const LmConfig& c) {
  json out;
  out["vocab_size"] = c.vocab_size;
  out["bos_token_id"] = c.bos_id >= 0 ? json(c.bos_id) : json(nullptr);
  out["eos_token_id"] = c.eos_id >= 0 ? json(c.eos_id) : json(nullptr);
  out["tie_word_embeddings"] = c.tied_embeddings;
  out["torch_dtype"] = "float32";
  if (c.arch == LmArch::kGpt2) {
    out["model_type"] = "gpt2";
    out["architectures"] = {"GPT2LMHeadModel"};
    out["n_embd"] = c.hidden_size;
    out["n_layer"] = c.num_layers;
    out["n_head"] = c.num_heads;
    out["n_positions"] = c.max_positions;
    out["n_inner"] = c.intermediate_size;
    out["layer_norm_epsilon"] = c.norm_eps;
    out["activation_function"] = "gelu_new";
    out["scale_attn_by_inverse_layer_idx"] = c.scale_attn_by_inverse_layer_idx;
  } else {
    const LmFamily& family = FamilyOf(c);
    out["model_type"] = family.model_type;
    out["architectures"] = {family.hf_class};
    out["hidden_size"] = c.hidden_size;
    out["num_hidden_layers"] = c.num_layers;
    out["num_attention_heads"] = c.num_heads;
    out["num_key_value_heads"] = c.num_kv_heads;
    out["head_dim"] = c.head_dim;
    out["intermediate_size"] = c.intermediate_size;
    out["max_position_embeddings"] = c.max_positions;
    out["rms_norm_eps"] = c.norm_eps;
    out["rope_theta"] = c.rope_theta;  // older transformers read this; newer ones convert it
    Require(c.rope_freq_factors.empty(),
            "this model's RoPE scaling is a table of frequency divisors (a GGUF file's rope_freqs.weight), which a "
            "Hugging Face config.json cannot state; write it as GGUF or start from the Hugging Face folder");
    if (c.rope_linear_factor != 1) {
      out["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_linear_factor}};
    } else if (c.rope_scaling == RopeScaling::kLlama3) {
      out["rope_scaling"] = {{"rope_type", "llama3"},
                             {"factor", c.rope_factor},
                             {"low_freq_factor", c.rope_low_freq_factor},
                             {"high_freq_factor", c.rope_high_freq_factor},
                             {"original_max_position_embeddings", c.rope_original_max_positions}};
    }
    family.write_config(c, out);
  }
  return out;
}

}  // namespace atq
