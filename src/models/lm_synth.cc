// The preset table (the shaping keys of the published config.json files and their checkpoints' shard sizes), the
// seeded weight generator, and the streaming shard writer.
#include "models/lm_synth.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "formats/half.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/strict_json.h"
#include "io/tensor_info.h"
#include "models/lm_config.h"
#include "models/lm_hf_writer.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/paths.h"
#include "util/progress.h"
#include "util/strings.h"

namespace atq {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kGigabyte = 1'000'000'000;
// Values generated and converted per write: 4 MB of float32, so memory stays flat whatever the tensor.
constexpr int64_t kChunkValues = int64_t{1} << 20;

// SplitMix64: the seed of each tensor's stream from the run's seed and the tensor's name, so a tensor's values do
// not depend on which tensors came before it.
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t NameHash(std::string_view name) {  // FNV-1a
  uint64_t hash = 0xCBF29CE484222325ull;
  for (const char c : name) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
  return hash;
}

// xoshiro256** with Box-Muller: standard normal values, two per transform.
class NormalStream {
 public:
  explicit NormalStream(uint64_t seed) {
    for (uint64_t& word : state_) word = SplitMix64(seed);
  }
  float Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(NextBits() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(NextBits() >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(radius * std::sin(2 * M_PI * u2));
    has_spare_ = true;
    return static_cast<float>(radius * std::cos(2 * M_PI * u2));
  }

 private:
  static uint64_t Rotate(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t NextBits() {
    const uint64_t result = Rotate(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotate(state_[3], 45);
    return result;
  }
  uint64_t state_[4];
  float spare_ = 0;
  bool has_spare_ = false;
};

// How a tensor's values are drawn: value = mean + scale * N(0, 1), times `outlier_gain` in outlier input columns.
struct Recipe {
  float mean = 0, scale = 0.02f;
  bool outliers = false;
};

// Trained transformers' rough statistics: linear weights ~0.02 growing with depth, output projections smaller
// (GPT-2's 1/sqrt(2 L) residual scaling), norms near their identity, small biases, and a few input channels
// (~0.25%, the same in every layer) carrying most of the activation outliers, which the weights that read them
// show as wider columns.
Recipe RecipeFor(const std::string& name, const LmConfig& config) {
  Recipe recipe;
  const auto ends_with = [&](std::string_view suffix) { return EndsWith(name, suffix); };
  if (ends_with("norm.weight")) return {config.norm_weight_offset != 0 ? 0.0f : 1.0f, 0.05f, false};
  if (ends_with(".bias")) return {0, 0.01f, false};
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return {0, 0.02f, false};
  int64_t layer = 0;
  if (std::sscanf(name.c_str(), "model.layers.%ld.", &layer) == 1 && config.num_layers > 1) {
    recipe.scale = 0.02f * (0.75f + 0.5f * static_cast<float>(layer) / static_cast<float>(config.num_layers - 1));
  }
  if (ends_with("o_proj.weight") || ends_with("down_proj.weight")) {
    recipe.scale /= std::sqrt(2.0f);
  } else {
    recipe.outliers = true;  // reads the residual stream
  }
  return recipe;
}

void Append(std::vector<uint8_t>& out, float value, QuantType dtype) {
  if (dtype == QuantType::kF32) {
    const uint32_t bits = FloatBits(value);
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(bits >> (8 * i)));
    return;
  }
  const uint16_t half = dtype == QuantType::kBF16 ? F32ToBF16(value) : F32ToF16(value);
  out.push_back(static_cast<uint8_t>(half));
  out.push_back(static_cast<uint8_t>(half >> 8));
}


}  // namespace

const std::vector<SynthPreset>& LmSynthPresets() {
  // The shaping keys of each model's published config.json, and its checkpoint's shard size.
  static const std::vector<SynthPreset> presets = {
      {"tinyllama-1.1b",
       R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 2048,
           "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
           "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"})",
       0, "@lenml__tokenizer-llama2"},
      {"mistral-7b",
       R"({"model_type": "mistral", "architectures": ["MistralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
           "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
           "sliding_window": 4096, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": "bfloat16"})",
       10 * kGigabyte, "@lenml__tokenizer-llama2"},
      {"llama-3-8b",
       R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
           "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "hidden_act": "silu",
           "tie_word_embeddings": false, "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16"})",
       5 * kGigabyte, "@lenml__tokenizer-llama3"},
      {"gemma-7b",
       R"({"model_type": "gemma", "architectures": ["GemmaForCausalLM"], "vocab_size": 256000, "hidden_size": 3072,
           "intermediate_size": 24576, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
           "head_dim": 256, "max_position_embeddings": 8192, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
           "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": true,
           "bos_token_id": 2, "eos_token_id": 1, "torch_dtype": "bfloat16"})",
       5 * kGigabyte, ""},
      {"qwen2-7b",
       R"({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 152064, "hidden_size": 3584,
           "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
           "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu",
           "use_sliding_window": false, "tie_word_embeddings": false, "bos_token_id": 151643,
           "eos_token_id": 151643, "torch_dtype": "bfloat16"})",
       4 * kGigabyte, "@lenml__tokenizer-qwen3"},
  };
  return presets;
}

SynthReport SynthesizeCheckpoint(const SynthOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  Require(options.dtype == QuantType::kF32 || options.dtype == QuantType::kF16 || options.dtype == QuantType::kBF16,
          "synth: --dtype must be f32, f16 or bf16, not {}", TypeName(options.dtype));
  Require(options.like.empty() != options.config.empty(), "synth: give one of --like and --config");
  nlohmann::json config_json;
  int64_t shard_bytes = 5 * kGigabyte;
  std::string tokenizer = options.tokenizer;
  std::string source;
  if (!options.like.empty()) {
    const SynthPreset* preset = nullptr;
    std::string known;
    for (const SynthPreset& row : LmSynthPresets()) {
      if (row.name == options.like) preset = &row;
      known += fmt::format("{}{}", known.empty() ? "" : ", ", row.name);
    }
    Require(preset != nullptr, "synth: unknown model '{}'; --like takes {}", options.like, known);
    config_json = nlohmann::json::parse(preset->config_json);
    shard_bytes = preset->shard_bytes;
    const fs::path preset_tokenizer = fs::path(ProjectDataDir()) / "npm" / std::string(preset->tokenizer) / "models";
    if (tokenizer.empty() && !preset->tokenizer.empty() && fs::exists(preset_tokenizer / "tokenizer.json")) {
      tokenizer = preset_tokenizer.string();
    }
    source = std::string(preset->name);
  } else {
    config_json = ReadStrictJsonFile(options.config);
    source = options.config;
  }
  if (options.shard_bytes > 0) shard_bytes = options.shard_bytes;
  if (options.layers > 0) {
    Require(config_json.contains("num_hidden_layers") && options.layers <= config_json["num_hidden_layers"].get<int64_t>(),
            "synth: --layers {} is more than the model's {}", options.layers, config_json.value("num_hidden_layers", 0));
    config_json["num_hidden_layers"] = options.layers;
  }
  config_json["torch_dtype"] = options.dtype == QuantType::kBF16  ? "bfloat16"
                               : options.dtype == QuantType::kF16 ? "float16"
                                                                  : "float32";
  const LmConfig config = ParseHfConfig(config_json, source);
  const std::vector<LmCheckpointTensor> tensors = LmCheckpointTensors(config);
  const int64_t value_bytes = options.dtype == QuantType::kF32 ? 4 : 2;

  std::vector<TensorToWrite> headers;
  int64_t total_bytes = 0, parameters = 0;
  for (const LmCheckpointTensor& tensor : tensors) {
    const int64_t count = CheckedElementCount(tensor.shape, tensor.name);
    headers.push_back({tensor.name, options.dtype, tensor.shape, nullptr, static_cast<uint64_t>(count * value_bytes)});
    total_bytes += count * value_bytes;
    parameters += count;
  }

  StagedFolder staged(options.out, "config.json");
  const fs::path dir(staged.path());
  WriteFileAtomically((dir / "config.json").string(), config_json.dump(2) + "\n");
  if (!tokenizer.empty()) CopyTokenizerFiles(tokenizer, dir.string());

  // The outlier input channels: the same few in every layer, drawn from the seed.
  std::vector<float> column_gain(static_cast<size_t>(config.hidden_size), 1.0f);
  {
    uint64_t state = options.seed ^ 0x6F75746C69657273ull;  // "outliers"
    const int64_t count = std::max<int64_t>(1, config.hidden_size / 400);
    for (int64_t i = 0; i < count; ++i) column_gain[SplitMix64(state) % column_gain.size()] = 6.0f;
  }

  SynthReport report;
  report.tensors = static_cast<int64_t>(tensors.size());
  report.parameters = parameters;
  report.bytes = total_bytes;
  Progress progress(fmt::format("synth {}", source), parameters, "weights");
  // Shards as transformers' save_pretrained cuts them (io/checkpoint.h).
  ShardedSafetensorsWriter writer(dir.string(), headers, {{"format", "pt"}},
                                  shard_bytes > 0 ? static_cast<uint64_t>(shard_bytes) : UINT64_MAX);
  std::vector<uint8_t> chunk;
  for (const LmCheckpointTensor& tensor : tensors) {
    const Recipe recipe = RecipeFor(tensor.name, config);
    uint64_t state = options.seed ^ NameHash(tensor.name);
    NormalStream normal(SplitMix64(state));
    const int64_t cols = tensor.shape.back();
    const int64_t count = CheckedElementCount(tensor.shape, tensor.name);
    const bool outliers = recipe.outliers && cols == config.hidden_size;
    for (int64_t done = 0; done < count;) {
      const int64_t n = std::min(kChunkValues, count - done);
      chunk.clear();
      chunk.reserve(static_cast<size_t>(n * value_bytes));
      for (int64_t k = 0; k < n; ++k) {
        float value = recipe.mean + recipe.scale * normal.Next();
        if (outliers) value *= column_gain[static_cast<size_t>((done + k) % cols)];
        Append(chunk, value, options.dtype);
      }
      writer.Write(chunk.data(), chunk.size());
      done += n;
      progress.Advance(n, fmt::format("{}, resident {:.0f} MB", tensor.name, static_cast<double>(ResidentBytes()) / 1e6));
    }
  }
  writer.Commit();
  report.files = writer.files();
  staged.Commit();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.Finish(fmt::format("{} files, {:.2f} GB", report.files.size(), static_cast<double>(total_bytes) / 1e9));
  return report;
}

}  // namespace atq
