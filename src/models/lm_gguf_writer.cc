// Language-model GGUF writer: tensor names, layouts, types and metadata as llama.cpp's converter writes them.
#include "models/lm_gguf_writer.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <string_view>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/gguf.h"
#include "io/gpt2_tokenizer.h"
#include "io/mapped_file.h"
#include "models/lm_family.h"
#include "models/lm_gguf_names.h"
#include "util/error.h"
#include "io/strict_json.h"
#include "io/input_file.h"

namespace atq {
namespace fs = std::filesystem;
namespace {

// GGML_QNT_VERSION: the block layouts' version, which llama.cpp checks before it reads quantized tensors.
constexpr uint32_t kQuantizationVersion = 2;

// llama.cpp's token types (llama_token_type, gguf-py's TokenType).
constexpr int32_t kTokenNormal = 1;
constexpr int32_t kTokenControl = 3;
constexpr int32_t kTokenUnused = 5;

// The types llama.cpp runs language models in that atq quantizes to, with the llama_ftype that
// general.file_type names a file by when its linear layers have that type.
struct ModelType {
  QuantType type;
  uint32_t llama_ftype;
};
constexpr ModelType kModelTypes[] = {
    {QuantType::kF32, 0},  {QuantType::kF16, 1},    {QuantType::kBF16, 32},  {QuantType::kQ8_0, 7},
    {QuantType::kQ4_0, 2}, {QuantType::kTQ2_0, 37}, {QuantType::kTQ1_0, 36},
};

const ModelType& CheckModelType(QuantType type, const std::string& path, std::string_view what) {
  for (const ModelType& model_type : kModelTypes) {
    if (model_type.type == type) return model_type;
  }
  Fail("{}: {} type {} is not one atq writes llama.cpp models in (f32, f16, bf16, q8_0, q4_0, tq2_0, tq1_0)", path,
       what, TypeName(type));
}

GgufValue Count(int64_t value, std::string_view what) {
  Require(value >= 0 && value <= std::numeric_limits<uint32_t>::max(), "{} {} does not fit GGUF's u32", what, value);
  return GgufValue(static_cast<uint32_t>(value));
}

// ---- vocabulary ----

struct Vocabulary {
  std::vector<std::string> tokens;  // by id, as many as the model's vocabulary
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  int32_t bos = -1;
  int32_t eos = -1;
  // Whether llama.cpp puts BOS/EOS around a sequence: tokenizer_config.json's add_bos_token / add_eos_token, as
  // the converter copies them, else llama.cpp's own default for a "gpt2" vocabulary (neither). Written either way,
  // so llama.cpp and atq read the same flag from the file.
  bool add_bos = false;
  bool add_eos = false;
};

// encoder.json / vocab.json: {"token": id, ...}, ids below the model's vocabulary size (convert_hf_to_gguf.py
// asserts the same). Ids no token holds are left empty here.
std::vector<std::string> ReadTokenIds(const std::string& path, int64_t vocab_size, std::vector<bool>& assigned) {
  const nlohmann::json json = ReadStrictJsonFile(path);
  Require(json.is_object() && !json.empty(), "{}: expected a non-empty object mapping tokens to ids", path);
  std::vector<std::string> tokens(static_cast<size_t>(vocab_size));
  assigned.assign(tokens.size(), false);
  for (const auto& [token, id] : json.items()) {
    Require(id.is_number_integer(), "{}: token '{}' has id {}, not an integer", path, token, id.dump());
    const int64_t value = id.get<int64_t>();
    Require(value >= 0 && value < vocab_size, "{}: token '{}' has id {}, outside the model's vocabulary of {} tokens",
            path, token, value, vocab_size);
    Require(!assigned[value], "{}: id {} is given to both '{}' and '{}'", path, value, tokens[value], token);
    assigned[value] = true;
    tokens[value] = token;
  }
  return tokens;
}

// vocab.bpe / merges.txt: an optional "#version" line, then one "left right" merge per line. Blank lines are
// skipped, as the converter skips them.
std::vector<std::string> ReadMerges(const std::string& path) {
  const std::string text = ReadInputText(path);
  std::string_view rest(text);
  std::vector<std::string> merges;
  bool first = true;
  while (!rest.empty()) {
    const size_t end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool header = first && line.substr(0, 1) == "#";
    first = false;
    if (header || line.empty()) continue;
    merges.emplace_back(line);
  }
  return merges;
}

Vocabulary ReadVocabulary(const std::string& dir, const LmConfig& config) {
  Require(fs::is_directory(dir), "{}: tokenizer folder not found", dir);
  std::string tokens_path, merges_path;
  for (const auto& [tokens_name, merges_name] : {std::pair<const char*, const char*>{"encoder.json", "vocab.bpe"},
                                                 {"vocab.json", "merges.txt"}}) {
    if (!fs::exists(fs::path(dir) / tokens_name)) continue;
    tokens_path = (fs::path(dir) / tokens_name).string();
    merges_path = (fs::path(dir) / merges_name).string();
    Require(fs::exists(merges_path), "{}: missing (the BPE merges that go with {})", merges_path, tokens_path);
    break;
  }
  Require(!tokens_path.empty(), "{}: no GPT-2 tokenizer here (looked for encoder.json + vocab.bpe, vocab.json + merges.txt)",
          dir);

  Vocabulary vocabulary;
  std::vector<bool> assigned;
  vocabulary.tokens = ReadTokenIds(tokens_path, config.vocab_size, assigned);
  vocabulary.merges = ReadMerges(merges_path);
  // GPT-2's one special token serves as BOS and EOS unless the config names others.
  int32_t end_of_text = -1;
  for (size_t id = 0; id < vocabulary.tokens.size(); ++id) {
    if (assigned[id] && vocabulary.tokens[id] == "<|endoftext|>") end_of_text = static_cast<int32_t>(id);
  }
  vocabulary.bos = config.bos_id >= 0 ? config.bos_id : end_of_text;
  vocabulary.eos = config.eos_id >= 0 ? config.eos_id : end_of_text;
  const fs::path tokenizer_config = fs::path(dir) / "tokenizer_config.json";
  if (fs::is_regular_file(tokenizer_config)) {
    const nlohmann::json json = ReadStrictJsonFile(tokenizer_config.string());
    for (auto [key, flag] : {std::pair<const char*, bool*>{"add_bos_token", &vocabulary.add_bos},
                             {"add_eos_token", &vocabulary.add_eos}}) {
      if (json.is_object() && json.contains(key) && json[key].is_boolean()) *flag = json[key].get<bool>();
    }
  }
  // Ids beyond the tokenizer's become "[PAD<id>]" tokens of type unused, as convert_hf_to_gguf.py pads them;
  // special tokens are control tokens, which llama.cpp never produces from plain text.
  vocabulary.types.resize(vocabulary.tokens.size());
  for (size_t id = 0; id < vocabulary.tokens.size(); ++id) {
    const auto token_id = static_cast<int32_t>(id);
    if (!assigned[id]) {
      vocabulary.tokens[id] = fmt::format("[PAD{}]", id);
      vocabulary.types[id] = kTokenUnused;
    } else if (token_id == end_of_text || token_id == vocabulary.bos || token_id == vocabulary.eos) {
      vocabulary.types[id] = kTokenControl;
    } else {
      vocabulary.types[id] = kTokenNormal;
    }
  }
  // Build the tokenizer llama.cpp (and atq's GGUF reader) will build, so a vocabulary it cannot read fails here,
  // naming the file, instead of in the reader of the file.
  Gpt2VocabularySource source;
  source.tokens = tokens_path;
  source.merges = merges_path;
  source.merge_unit = "merge";
  const Gpt2Tokenizer read_back(vocabulary.tokens, vocabulary.merges, source, vocabulary.bos, vocabulary.eos);
  return vocabulary;
}

// ---- tensors ----

struct PlannedTensor {
  LmGgufTensorReport report;
  std::vector<int64_t> shape;  // outermost first
  std::vector<uint8_t> data;
};

// The type a tensor asks for: norms and biases F32 (as the converter keeps every 1-D tensor), the position
// embedding F32, token embedding and head the embedding type, every other weight the linear type; overrides win
// for 2-D weights.
QuantType RequestedType(const std::string& hf_name, const std::string& gguf_name, const torch::Tensor& value,
                        const LmGgufOptions& options, const std::string& path) {
  const auto override_type = options.overrides.find(hf_name);
  if (value.dim() == 1) {
    Require(override_type == options.overrides.end() || override_type->second == QuantType::kF32,
            "{}: tensor '{}' is a norm weight or bias, which llama.cpp models keep in f32, not {}", path, hf_name,
            override_type == options.overrides.end() ? "" : TypeName(override_type->second));
    return QuantType::kF32;
  }
  if (override_type != options.overrides.end()) return override_type->second;
  if (gguf_name == "position_embd.weight") return QuantType::kF32;
  if (gguf_name == "token_embd.weight" || gguf_name == "output.weight") return options.embedding_type;
  return options.linear_type;
}

bool Fits(QuantType type, int64_t cols) { return cols % Traits(type).block_size == 0; }

PlannedTensor PlanTensor(const std::string& hf_name, const torch::Tensor& parameter, const LmConfig& config,
                         const LmGgufOptions& options, const std::string& path) {
  PlannedTensor planned;
  LmGgufTensorReport& report = planned.report;
  report.hf_name = hf_name;
  try {
    report.gguf_name = GgufNameOfHf(hf_name, config.arch);
  } catch (const Error& e) {
    Fail("{}: {}", path, e.what());
  }
  torch::Tensor value = parameter.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  // convert_hf_to_gguf.py permutes q and k weights and biases into ggml's RoPE order, k per KV head; `rows` is
  // that order (source row of each written row), for prepacked bytes.
  torch::Tensor row_order = torch::arange(value.size(0), torch::kFloat64).unsqueeze(1);
  if (FamilyOf(config).gguf_rope_interleaved) {
    const std::string_view gguf(report.gguf_name);
    for (const auto& [part, heads] : {std::pair<std::string_view, int64_t>{".attn_q.", config.num_heads},
                                      {".attn_k.", config.num_kv_heads}}) {
      if (gguf.find(part) == std::string_view::npos) continue;
      value = HalfToInterleavedRotary(value, heads);
      row_order = HalfToInterleavedRotary(row_order, heads);
    }
  }
  if (const auto prepacked = options.prepacked.find(hf_name); prepacked != options.prepacked.end()) {
    const auto& [type, bytes] = prepacked->second;
    const int64_t cols = value.size(-1), rows = value.size(0);
    const int64_t row_bytes = PackedBytes(Layout{type, 1, cols});
    Require(value.dim() == 2 && static_cast<int64_t>(bytes.size()) == rows * row_bytes,
            "{}: prepacked tensor '{}' holds {} bytes, a {} [{}, {}] weight needs {}", path, hf_name, bytes.size(),
            TypeName(type), rows, cols, rows * row_bytes);
    CheckModelType(type, path, fmt::format("tensor '{}':", hf_name));
    report.requested = report.written = type;
    planned.shape = value.sizes().vec();
    planned.data.resize(bytes.size());
    for (int64_t row = 0; row < rows; ++row) {
      const auto source = static_cast<int64_t>(row_order[row][0].item<double>());
      std::copy_n(bytes.begin() + source * row_bytes, row_bytes, planned.data.begin() + row * row_bytes);
    }
    report.bytes = static_cast<int64_t>(planned.data.size());
    return planned;
  }
  report.requested = RequestedType(hf_name, report.gguf_name, value, options, path);
  CheckModelType(report.requested, path, fmt::format("tensor '{}':", hf_name));

  const int64_t cols = value.size(-1), rows = value.numel() / std::max<int64_t>(cols, 1);
  report.written = report.requested;
  if (!Fits(report.requested, cols)) {
    const TypeTraits& requested = Traits(report.requested);
    const TypeTraits& fallback = Traits(options.fallback_type);
    report.fallback_reason =
        fmt::format("row length {} is not a multiple of {}'s block of {}", cols, requested.name, requested.block_size);
    if (Fits(options.fallback_type, cols)) {
      report.written = options.fallback_type;
      report.fallback_reason += fmt::format("; wrote the fallback type {}", fallback.name);
    } else {
      report.written = QuantType::kF16;
      report.fallback_reason +=
          fmt::format(" nor of the fallback {}'s block of {}; wrote f16", fallback.name, fallback.block_size);
    }
  }
  planned.shape = value.sizes().vec();
  try {
    planned.data = Quantize(Layout{report.written, rows, cols}, value.data_ptr<float>());
  } catch (const Error& e) {
    Fail("{}: tensor '{}': {}", path, hf_name, e.what());
  }
  report.bytes = static_cast<int64_t>(planned.data.size());
  return planned;
}

}  // namespace

void CheckGgufWritable(const LmConfig& config, const std::string& path) {
  // The families whose GGUF layout atq writes so far: llama.cpp's "llama" (the plain rotary decoder) and "gpt2".
  const LmFamily& family = FamilyOf(config);
  // (q/k/v biases are Qwen2's own, which its GGUF holds.)
  const bool plain = config.norm_weight_offset == 0 && !config.scale_embeddings &&
                     config.sliding_window == 0 && config.attention_scale == 0 && config.attention_softcap == 0 &&
                     config.final_softcap == 0 && !config.sandwich_norms && config.activation == LmActivation::kSilu &&
                     !config.scale_attn_by_inverse_layer_idx && config.rope_scaling == RopeScaling::kNone;
  Require(!family.gguf_arch.empty() && plain,
          "{}: atq does not write GGUF files of this {} model yet (it writes llama without llama3 RoPE scaling, "
          "qwen2, and gpt2 without per-layer attention scaling)",
          path, family.model_type);
}

namespace {

// general.file_type names a file by the type most of its block weights are stored in ("mostly Q4_0"), whatever
// was asked for: an all-f16 file says F16 even when the requested linear type was Q8_0.
QuantType PredominantBlockType(const std::vector<PlannedTensor>& planned) {
  std::map<QuantType, int64_t> weights;
  for (const PlannedTensor& tensor : planned) {
    if (tensor.shape.size() != 2 || tensor.report.gguf_name.rfind("blk.", 0) != 0) continue;
    weights[tensor.report.written] += tensor.shape[0] * tensor.shape[1];
  }
  QuantType best = QuantType::kF32;
  int64_t most = -1;
  for (const auto& [type, count] : weights) {
    if (count > most) std::tie(best, most) = std::pair{type, count};
  }
  return best;
}

void SetMetadata(GgufMetadata& metadata, const LmConfig& config, QuantType file_type,
                 const Vocabulary& vocabulary, const std::string& path, const std::string& name) {
  CheckGgufWritable(config, path);
  const std::string arch(FamilyOf(config).gguf_arch);
  const std::string p = arch + ".";
  metadata.Set("general.architecture", arch);
  metadata.Set("general.name", name.empty() ? fs::path(path).stem().string() : name);
  metadata.Set(p + "context_length", Count(config.max_positions, "context length"));
  metadata.Set(p + "embedding_length", Count(config.hidden_size, "hidden size"));
  metadata.Set(p + "block_count", Count(config.num_layers, "layer count"));
  metadata.Set(p + "feed_forward_length", Count(config.intermediate_size, "MLP width"));
  metadata.Set(p + "attention.head_count", Count(config.num_heads, "head count"));
  if (config.arch == LmArch::kLlama) {
    metadata.Set(p + "attention.head_count_kv", Count(config.num_kv_heads, "KV head count"));
    metadata.Set(p + "rope.freq_base", static_cast<float>(config.rope_theta));
    metadata.Set(p + "attention.layer_norm_rms_epsilon", static_cast<float>(config.norm_eps));
    // The converter writes these when config.json has head_dim, as transformers' Llama configs now do.
    metadata.Set(p + "attention.key_length", Count(config.head_dim, "head dim"));
    metadata.Set(p + "attention.value_length", Count(config.head_dim, "head dim"));
    metadata.Set(p + "vocab_size", Count(config.vocab_size, "vocabulary size"));
    metadata.Set(p + "rope.dimension_count", Count(config.head_dim, "head dim"));
    if (config.rope_linear_factor != 1) {
      metadata.Set(p + "rope.scaling.type", "linear");
      metadata.Set(p + "rope.scaling.factor", static_cast<float>(config.rope_linear_factor));
    }
  } else {
    metadata.Set(p + "attention.layer_norm_epsilon", static_cast<float>(config.norm_eps));
  }
  metadata.Set("general.file_type", GgufValue(CheckModelType(file_type, path, "linear").llama_ftype));
  metadata.Set("general.quantization_version", GgufValue(kQuantizationVersion));

  metadata.Set("tokenizer.ggml.model", "gpt2");
  metadata.Set("tokenizer.ggml.pre", "gpt-2");
  metadata.Set("tokenizer.ggml.tokens", GgufArray(vocabulary.tokens));
  metadata.Set("tokenizer.ggml.token_type", GgufArray(vocabulary.types));
  metadata.Set("tokenizer.ggml.merges", GgufArray(vocabulary.merges));
  if (vocabulary.bos >= 0) metadata.Set("tokenizer.ggml.bos_token_id", Count(vocabulary.bos, "BOS id"));
  if (vocabulary.eos >= 0) metadata.Set("tokenizer.ggml.eos_token_id", Count(vocabulary.eos, "EOS id"));
  metadata.Set("tokenizer.ggml.add_bos_token", GgufValue(vocabulary.add_bos));
  metadata.Set("tokenizer.ggml.add_eos_token", GgufValue(vocabulary.add_eos));
}

}  // namespace

LmGgufReport WriteLmGguf(CausalLmImpl& model, const std::string& tokenizer_dir, const LmGgufOptions& options,
                         const std::string& path) {
  const LmConfig& config = model.config();
  CheckModelType(options.linear_type, path, "linear");
  CheckModelType(options.embedding_type, path, "embedding");
  CheckModelType(options.fallback_type, path, "fallback");
  const auto parameters = model.named_parameters();
  for (const auto& [name, type] : options.overrides) {
    Require(parameters.contains(name), "{}: the override for '{}' names no tensor of this {} model", path, name,
            LmArchName(config.arch));
  }
  const Vocabulary vocabulary = ReadVocabulary(tokenizer_dir, config);

  std::vector<PlannedTensor> planned;
  planned.reserve(parameters.size());
  torch::NoGradGuard no_grad;
  for (const auto& parameter : parameters) {
    planned.push_back(PlanTensor(parameter.key(), parameter.value(), config, options, path));
  }

  GgufWriter writer(path);
  SetMetadata(writer.metadata(), config, PredominantBlockType(planned), vocabulary, path, options.name);
  LmGgufReport report;
  for (const PlannedTensor& tensor : planned) {
    writer.AddTensor(tensor.report.gguf_name, tensor.report.written, tensor.shape, tensor.data.data(),
                     tensor.data.size());
    report.tensors.push_back(tensor.report);
  }
  writer.Write();
  report.file_bytes = static_cast<int64_t>(fs::file_size(path));
  return report;
}

}  // namespace atq
