// Language-model GGUF writer: tensor names, layouts, types and metadata as llama.cpp's converter writes them.
#include "models/lm_gguf_writer.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <cstring>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/gguf.h"
#include "io/bpe_pre_tokenizers.h"
#include "io/gpt2_tokenizer.h"
#include "io/hf_tokenizer.h"
#include "io/score_bpe_tokenizer.h"
#include "io/mapped_file.h"
#include "models/lm_family.h"
#include "models/lm_gguf_names.h"
#include "models/llama.h"
#include "util/error.h"
#include "util/log.h"
#include "io/strict_json.h"
#include "io/input_file.h"

namespace atq {
namespace fs = std::filesystem;
namespace {

// GGML_QNT_VERSION: the block layouts' version, which llama.cpp checks before it reads quantized tensors.
constexpr uint32_t kQuantizationVersion = 2;

// llama.cpp's token types (llama_token_type, gguf-py's TokenType).
constexpr int32_t kTokenNormal = 1;
constexpr int32_t kTokenUnknown = 2;
constexpr int32_t kTokenControl = 3;
constexpr int32_t kTokenUserDefined = 4;
constexpr int32_t kTokenUnused = 5;
constexpr int32_t kTokenByte = 6;

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
  std::string model = "gpt2";       // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style)
  std::string pre = "gpt-2";        // tokenizer.ggml.pre (gpt2 vocabularies)
  std::vector<std::string> tokens;  // by id, as many as the model's vocabulary
  std::vector<int32_t> types;
  std::vector<std::string> merges;  // gpt2 vocabularies
  std::vector<float> scores;        // llama vocabularies: higher merges first
  bool add_space_prefix = false;    // llama vocabularies
  int32_t bos = -1;
  int32_t eos = -1;
  int32_t unk = -1;
  int32_t pad = -1;
  std::string chat_template;        // tokenizer_config.json's, when it has one
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

// tokenizer_config.json's add_bos_token / add_eos_token and chat template (a string, or a list of named ones of
// which the converter writes "default").
void ReadTokenizerConfig(const std::string& dir, Vocabulary& vocabulary) {
  const fs::path tokenizer_config = fs::path(dir) / "tokenizer_config.json";
  if (!fs::is_regular_file(tokenizer_config)) return;
  const nlohmann::json json = ReadStrictJsonFile(tokenizer_config.string());
  if (!json.is_object()) return;
  for (auto [key, flag] : {std::pair<const char*, bool*>{"add_bos_token", &vocabulary.add_bos},
                           {"add_eos_token", &vocabulary.add_eos}}) {
    if (json.contains(key) && json[key].is_boolean()) *flag = json[key].get<bool>();
  }
  // pad_token: a string or {"content": ...}, looked up among the tokens.
  if (json.contains("pad_token")) {
    const nlohmann::json& pad = json["pad_token"];
    const nlohmann::json& content = pad.is_object() && pad.contains("content") ? pad["content"] : pad;
    if (content.is_string()) {
      const auto found = std::find(vocabulary.tokens.begin(), vocabulary.tokens.end(), content.get<std::string>());
      if (found != vocabulary.tokens.end()) vocabulary.pad = static_cast<int32_t>(found - vocabulary.tokens.begin());
    }
  }
  if (json.contains("chat_template")) {
    const nlohmann::json& chat = json["chat_template"];
    if (chat.is_string()) vocabulary.chat_template = chat.get<std::string>();
    if (chat.is_array()) {
      for (const nlohmann::json& entry : chat) {
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
            entry["template"].is_string()) {
          vocabulary.chat_template = entry["template"].get<std::string>();
        }
      }
    }
  }
}

// A tokenizer.json as llama.cpp's converter spells it: byte-level BPE as a "gpt2" vocabulary with its merges and
// the pre-tokenizer named by its regex; SentencePiece-style BPE (byte fallback) as a "llama" vocabulary whose
// scores order the merges (the piece a merge makes scores -rank, so llama.cpp's highest-score-first merging takes
// them in the tokenizer's order). Added tokens are control (special) or user-defined; ids past the tokenizer's
// are "[PAD<id>]", unused.
Vocabulary ReadHfVocabulary(const std::string& dir, const LmConfig& config) {
  const std::string path = (fs::path(dir) / "tokenizer.json").string();
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
  const std::unique_ptr<Tokenizer> tokenizer = LoadHfTokenizer(path, fs::exists(config_path) ? config_path : "");
  const HfVocabularyView view = DescribeHfVocabulary(*tokenizer);
  Require(static_cast<int64_t>(view.tokens.size()) <= config.vocab_size,
          "{}: {} tokens, more than the model's vocabulary of {}", path, view.tokens.size(), config.vocab_size);
  Vocabulary vocabulary;
  if (view.byte_level) {
    const std::string regex = view.split_pattern;
    const BpePreTokenizer* pre = regex.empty() ? FindBpePreTokenizer("gpt-2") : FindBpePreTokenizerByRegex(regex);
    Require(pre != nullptr,
            "{}: the pre-tokenizer's regex is not one llama.cpp names (atq knows {}); llama.cpp would split text "
            "differently",
            path, BpePreTokenizerNames());
    vocabulary.model = "gpt2";
    vocabulary.pre = std::string(pre->name);
    vocabulary.merges = view.merges;
  } else {
    Require(view.byte_fallback, "{}: neither byte-level BPE nor SentencePiece-style BPE with byte fallback; llama.cpp "
            "has no vocabulary type for it", path);
    vocabulary.model = "llama";
    vocabulary.add_space_prefix = view.add_space_prefix;
  }
  const auto size = static_cast<size_t>(config.vocab_size);
  vocabulary.tokens = view.tokens;
  vocabulary.tokens.resize(size);
  vocabulary.types.assign(size, kTokenNormal);
  std::unordered_map<std::string_view, int32_t> ids;
  for (size_t id = 0; id < view.tokens.size(); ++id) ids.emplace(view.tokens[id], static_cast<int32_t>(id));
  if (vocabulary.model == "llama") {
    // Pieces no merge makes (characters, bytes, special tokens) rank below every merge.
    vocabulary.scores.assign(size, -static_cast<float>(view.merges.size() + 1));
    for (size_t rank = 0; rank < view.merges.size(); ++rank) {
      const std::string& merge = view.merges[rank];
      const size_t space = merge.find(' ');
      const auto made = ids.find(merge.substr(0, space) + merge.substr(space + 1));
      if (made != ids.end() && vocabulary.scores[made->second] < -static_cast<float>(rank)) {
        vocabulary.scores[made->second] = -static_cast<float>(rank);
      }
    }
  }
  for (size_t id = 0; id < size; ++id) {
    if (id >= view.tokens.size()) {
      vocabulary.tokens[id] = fmt::format("[PAD{}]", id);
      vocabulary.types[id] = kTokenUnused;
    } else if (view.special[id]) {
      vocabulary.types[id] = static_cast<int32_t>(id) == view.unk_id ? kTokenUnknown : kTokenControl;
    } else if (view.added[id]) {
      vocabulary.types[id] = kTokenUserDefined;
    } else if (vocabulary.model == "llama" && ParseBytePiece(view.tokens[id])) {
      vocabulary.types[id] = kTokenByte;
    }
  }
  vocabulary.bos = tokenizer->bos_id();
  vocabulary.eos = tokenizer->eos_id();
  vocabulary.unk = view.unk_id;
  vocabulary.add_bos = tokenizer->add_bos();
  ReadTokenizerConfig(dir, vocabulary);
  return vocabulary;
}

Vocabulary ReadVocabulary(const std::string& dir, const LmConfig& config) {
  Require(fs::is_directory(dir), "{}: tokenizer folder not found", dir);
  if (fs::exists(fs::path(dir) / "tokenizer.json")) return ReadHfVocabulary(dir, config);
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
  ReadTokenizerConfig(dir, vocabulary);
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
    report.gguf_name = GgufNameOfHf(hf_name, FamilyOf(config));
  } catch (const Error& e) {
    Fail("{}: {}", path, e.what());
  }
  torch::Tensor value = parameter.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  // Gemma's (1 + w) norms are stored as 1 + w, which llama.cpp's plain RMSNorm multiplies by.
  if (config.norm_weight_offset != 0 && IsNormWeight(hf_name)) value = value + config.norm_weight_offset;
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
  const LmFamily& family = FamilyOf(config);
  // llama.cpp's gpt2 graph has no per-layer attention scaling; every other mechanism of the family table has its
  // place in llama.cpp's architecture of the family (or a key of its own, below).
  Require(!config.scale_attn_by_inverse_layer_idx,
          "{}: llama.cpp's gpt2 architecture has no scale_attn_by_inverse_layer_idx, so atq does not write this {} "
          "model as GGUF",
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

void SetVocabularyMetadata(GgufMetadata& metadata, const Vocabulary& vocabulary) {
  metadata.Set("tokenizer.ggml.model", vocabulary.model);
  if (vocabulary.model == "gpt2") metadata.Set("tokenizer.ggml.pre", vocabulary.pre);
  metadata.Set("tokenizer.ggml.tokens", GgufArray(vocabulary.tokens));
  if (!vocabulary.scores.empty()) metadata.Set("tokenizer.ggml.scores", GgufArray(vocabulary.scores));
  metadata.Set("tokenizer.ggml.token_type", GgufArray(vocabulary.types));
  if (vocabulary.model == "gpt2") metadata.Set("tokenizer.ggml.merges", GgufArray(vocabulary.merges));
  if (vocabulary.bos >= 0) metadata.Set("tokenizer.ggml.bos_token_id", Count(vocabulary.bos, "BOS id"));
  if (vocabulary.eos >= 0) metadata.Set("tokenizer.ggml.eos_token_id", Count(vocabulary.eos, "EOS id"));
  if (vocabulary.unk >= 0) metadata.Set("tokenizer.ggml.unknown_token_id", Count(vocabulary.unk, "unknown id"));
  if (vocabulary.pad >= 0) metadata.Set("tokenizer.ggml.padding_token_id", Count(vocabulary.pad, "padding id"));
  if (vocabulary.model == "llama") metadata.Set("tokenizer.ggml.add_space_prefix", GgufValue(vocabulary.add_space_prefix));
  metadata.Set("tokenizer.ggml.add_bos_token", GgufValue(vocabulary.add_bos));
  metadata.Set("tokenizer.ggml.add_eos_token", GgufValue(vocabulary.add_eos));
  if (!vocabulary.chat_template.empty()) metadata.Set("tokenizer.chat_template", vocabulary.chat_template);
}

void SetMetadata(GgufMetadata& metadata, const LmConfig& config, QuantType file_type,
                 const Vocabulary& vocabulary, const std::string& path, const std::string& name) {
  const LmFamily& family = FamilyOf(config);
  const std::string arch(family.gguf_arch);
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
    // The converter writes these when config.json has head_dim, as transformers' configs now do.
    metadata.Set(p + "attention.key_length", Count(config.head_dim, "head dim"));
    metadata.Set(p + "attention.value_length", Count(config.head_dim, "head dim"));
    metadata.Set(p + "vocab_size", Count(config.vocab_size, "vocabulary size"));
    metadata.Set(p + "rope.dimension_count", Count(config.head_dim, "head dim"));
    if (config.rope_linear_factor != 1) {
      metadata.Set(p + "rope.scaling.type", "linear");
      metadata.Set(p + "rope.scaling.factor", static_cast<float>(config.rope_linear_factor));
    }
    if (config.rope_scaling == RopeScaling::kLlama3 && config.rope_freq_factors.empty()) {
      metadata.Set(kLlama3RopeKeys[0], static_cast<float>(config.rope_factor));
      metadata.Set(kLlama3RopeKeys[1], static_cast<float>(config.rope_low_freq_factor));
      metadata.Set(kLlama3RopeKeys[2], static_cast<float>(config.rope_high_freq_factor));
      metadata.Set(kLlama3RopeKeys[3], Count(config.rope_original_max_positions, "original context"));
    }
    // The keys llama.cpp's Gemma 2 reads; a sliding window elsewhere (Mistral, Phi-3) is written under the same
    // key, which llama.cpp's llama architecture does not read (it attends to the whole context) but atq does.
    if (config.sliding_window > 0) {
      metadata.Set(p + "attention.sliding_window", Count(config.sliding_window, "sliding window"));
      if (!config.window_on_even_layers && arch == "llama" && config.sliding_window < config.max_positions) {
        LogWarn("{}: llama.cpp runs this {} model without its {}-token sliding window (its llama architecture has "
                "none); atq reads the window back from {}attention.sliding_window",
                path, family.model_type, config.sliding_window, p);
      }
    }
    if (config.attention_softcap > 0) metadata.Set(p + "attn_logit_softcapping", static_cast<float>(config.attention_softcap));
    if (config.final_softcap > 0) metadata.Set(p + "final_logit_softcapping", static_cast<float>(config.final_softcap));
    // Gemma 2's query_pre_attn_scalar: llama.cpp derives the score scale from the model size; atq writes it.
    if (config.attention_scale > 0) metadata.Set(p + "attention.scale", static_cast<float>(config.attention_scale));
  } else {
    metadata.Set(p + "attention.layer_norm_epsilon", static_cast<float>(config.norm_eps));
  }
  metadata.Set("general.file_type", GgufValue(CheckModelType(file_type, path, "linear").llama_ftype));
  metadata.Set("general.quantization_version", GgufValue(kQuantizationVersion));
  SetVocabularyMetadata(metadata, vocabulary);
}

}  // namespace

LmGgufReport WriteLmGguf(CausalLmImpl& model, const std::string& tokenizer_dir, const LmGgufOptions& options,
                         const std::string& path) {
  const LmConfig& config = model.config();
  CheckModelType(options.linear_type, path, "linear");
  CheckModelType(options.embedding_type, path, "embedding");
  CheckModelType(options.fallback_type, path, "fallback");
  CheckGgufWritable(config, path);
  const LmFamily& family = FamilyOf(config);
  const auto parameters = model.named_parameters();
  for (const auto& [name, type] : options.overrides) {
    Require(parameters.contains(name), "{}: the override for '{}' names no tensor of this {} model", path, name,
            family.model_type);
  }
  const Vocabulary vocabulary = ReadVocabulary(tokenizer_dir, config);

  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& parameter : parameters) tensors.emplace_back(parameter.key(), parameter.value());
  LmGgufOptions fused_options = options;
  if (family.fuse_for_checkpoint != nullptr) {
    // llama.cpp holds Phi-3's projections fused as its checkpoints do; prepacked parts are fused the same way, as
    // rows of bytes.
    family.fuse_for_checkpoint(tensors);
    std::vector<std::pair<std::string, torch::Tensor>> packed_rows;
    std::optional<QuantType> packed_type;
    for (const auto& [name, entry] : options.prepacked) {
      Require(!packed_type || *packed_type == entry.first,
              "{}: prepacked weights in both {} and {}; a {} GGUF fuses projections, which must share one type", path,
              TypeName(*packed_type), TypeName(entry.first), family.model_type);
      packed_type = entry.first;
      const int64_t rows = parameters[name].size(0);
      packed_rows.emplace_back(name, torch::from_blob(const_cast<uint8_t*>(entry.second.data()),
                                                      {rows, static_cast<int64_t>(entry.second.size()) / rows},
                                                      torch::kUInt8));
    }
    if (packed_type) {
      family.fuse_for_checkpoint(packed_rows);
      fused_options.prepacked.clear();
      for (const auto& [name, bytes] : packed_rows) {
        const torch::Tensor rows = bytes.contiguous();
        fused_options.prepacked[name] = {
            *packed_type, std::vector<uint8_t>(rows.data_ptr<uint8_t>(), rows.data_ptr<uint8_t>() + rows.numel())};
      }
    }
  }

  std::vector<PlannedTensor> planned;
  planned.reserve(tensors.size() + 1);
  for (const auto& [name, value] : tensors) planned.push_back(PlanTensor(name, value, config, fused_options, path));
  // Llama 3's RoPE scaling travels as llama.cpp's converter writes it: the per-frequency divisors, f32.
  if (const std::vector<double> divisors = RopeFrequencyDivisors(config); !divisors.empty()) {
    PlannedTensor rope;
    rope.report.hf_name = "(rope scaling)";
    rope.report.gguf_name = "rope_freqs.weight";
    rope.shape = {static_cast<int64_t>(divisors.size())};
    const std::vector<float> values(divisors.begin(), divisors.end());
    rope.data.resize(values.size() * sizeof(float));
    std::memcpy(rope.data.data(), values.data(), rope.data.size());
    rope.report.bytes = static_cast<int64_t>(rope.data.size());
    planned.push_back(std::move(rope));
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
