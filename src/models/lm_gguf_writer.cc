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
#include "kernels/packed_matrix.h"
#include "io/bpe_pre_tokenizers.h"
#include "io/gpt2_tokenizer.h"
#include "io/hf_tokenizer.h"
#include "io/score_bpe_tokenizer.h"
#include "io/mapped_file.h"
#include "models/lm_family.h"
#include "models/lm_gguf_names.h"
#include "models/lm_loader.h"
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
};

// The type a tensor asks for: norms and biases F32 (as the converter keeps every 1-D tensor), the position
// embedding F32, token embedding and head the embedding type, every other weight the linear type; overrides win
// for 2-D weights.
QuantType RequestedType(const std::string& hf_name, const std::string& gguf_name, size_t dims,
                        const LmGgufOptions& options, const std::string& path) {
  const auto override_type = options.overrides.find(hf_name);
  if (dims == 1) {
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

PlannedTensor PlanTensor(const std::string& hf_name, const std::vector<int64_t>& shape, const LmConfig& config,
                         const LmGgufOptions& options, const std::string& path) {
  PlannedTensor planned;
  planned.shape = shape;
  LmGgufTensorReport& report = planned.report;
  report.hf_name = hf_name;
  try {
    report.gguf_name = GgufNameOfHf(hf_name, FamilyOf(config));
  } catch (const Error& e) {
    Fail("{}: {}", path, e.what());
  }
  report.requested = RequestedType(hf_name, report.gguf_name, shape.size(), options, path);
  CheckModelType(report.requested, path, fmt::format("tensor '{}':", hf_name));
  const int64_t cols = shape.empty() ? 1 : shape.back();
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
  report.bytes = PackedBytes(LayoutForShape(report.written, shape));
  return planned;
}

// The tensor's bytes in the file: the values in llama.cpp's layout (Gemma's 1 + w norms, q/k rows in ggml's RoPE
// order) quantized to the planned type, or, where the weight arrived packed in that very type, its own bytes with
// the rows moved (a GPTQ result on llama.cpp's grid keeps its exact codes and scales). Sets the report's
// weight_error for quantized 2-D tensors.
std::vector<uint8_t> EncodeTensor(PlannedTensor& planned, torch::Tensor value, const PackedWeights* packed,
                                  const LmConfig& config, const std::string& path) {
  LmGgufTensorReport& report = planned.report;
  const std::string& hf_name = report.hf_name;
  value = value.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  Require(value.sizes().vec() == planned.shape, "{}: tensor '{}' has shape {}, the header says {}", path, hf_name,
          ShapeString(value.sizes().vec()), ShapeString(planned.shape));
  if (config.norm_weight_offset != 0 && IsNormWeight(hf_name)) value = value + config.norm_weight_offset;
  // convert_hf_to_gguf.py permutes q and k weights and biases into ggml's RoPE order, k per KV head; `row_order`
  // is that order (source row of each written row), for packed bytes.
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
  const int64_t cols = value.size(-1), rows = value.numel() / std::max<int64_t>(cols, 1);
  std::vector<uint8_t> data;
  if (packed != nullptr && packed->layout.type == report.written && value.dim() == 2 &&
      Traits(report.written).family == TypeFamily::kGgmlBlock) {
    const int64_t row_bytes = PackedBytes(Layout{report.written, 1, cols});
    Require(static_cast<int64_t>(packed->size()) == rows * row_bytes,
            "{}: packed tensor '{}' holds {} bytes, a {} [{}, {}] weight needs {}", path, hf_name, packed->size(),
            TypeName(report.written), rows, cols, rows * row_bytes);
    data.resize(packed->size());
    const torch::Tensor order = row_order.to(torch::kInt64).contiguous();
    const int64_t* source = order.data_ptr<int64_t>();
    for (int64_t row = 0; row < rows; ++row) {
      std::copy_n(packed->data() + source[row] * row_bytes, row_bytes, data.begin() + row * row_bytes);
    }
  } else {
    try {
      data = Quantize(Layout{report.written, rows, cols}, value.data_ptr<float>());
    } catch (const Error& e) {
      Fail("{}: tensor '{}': {}", path, hf_name, e.what());
    }
  }
  if (value.dim() == 2 && Traits(report.written).is_quantized) {
    // Row by row, so that measuring a 500 MB embedding costs one row of memory, not four copies of it.
    const PackedMatrix matrix{Layout{report.written, rows, cols}, data.data()};
    const float* expected = value.data_ptr<float>();
    std::vector<float> row(static_cast<size_t>(cols));
    double error = 0, norm = 0;
    for (int64_t r = 0; r < rows; ++r) {
      DequantizeRow(matrix, r, row.data());
      for (int64_t c = 0; c < cols; ++c) {
        const double w = expected[r * cols + c];
        error += (row[static_cast<size_t>(c)] - w) * (row[static_cast<size_t>(c)] - w);
        norm += w * w;
      }
    }
    report.weight_error = error / std::max(norm, 1e-300);
  }
  return data;
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

struct LmGgufStream::Group {
  std::vector<PlannedTensor> tensors;  // as written: fused, in the family's checkpoint order
};

LmGgufStream::LmGgufStream(const LmConfig& config, const std::vector<std::vector<LmTensorShape>>& groups,
                           const std::string& tokenizer_dir, const LmGgufOptions& options, const std::string& path)
    : config_(config), path_(path), writer_(path) {
  CheckModelType(options.linear_type, path, "linear");
  CheckModelType(options.embedding_type, path, "embedding");
  CheckModelType(options.fallback_type, path, "fallback");
  CheckGgufWritable(config, path);
  const LmFamily& family = FamilyOf(config);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& group : groups) {
    for (const auto& [name, shape] : group) shapes.emplace(name, shape);
  }
  for (const auto& [name, type] : options.overrides) {
    Require(shapes.count(name) != 0, "{}: the override for '{}' names no tensor of this {} model", path, name,
            family.model_type);
  }
  const Vocabulary vocabulary = ReadVocabulary(tokenizer_dir, config);

  // What each group becomes in the file, fused as the family's checkpoints are (Phi-3's qkv_proj, gate_up_proj):
  // the fusing runs on stand-ins whose first value names the part a fused tensor starts with.
  std::vector<PlannedTensor> all;
  for (const auto& group : groups) {
    std::vector<std::pair<std::string, torch::Tensor>> stand_ins;
    for (size_t i = 0; i < group.size(); ++i) {
      const std::vector<int64_t>& shape = group[i].second;
      stand_ins.emplace_back(group[i].first, torch::full({shape.empty() ? 1 : shape[0], 1}, static_cast<double>(i),
                                                         torch::kFloat64));
    }
    if (family.fuse_for_checkpoint != nullptr) family.fuse_for_checkpoint(stand_ins);
    Group planned;
    for (const auto& [name, stand_in] : stand_ins) {
      const std::vector<int64_t>& first = group[static_cast<size_t>(stand_in[0][0].item<double>())].second;
      std::vector<int64_t> shape = first;
      if (!shape.empty()) shape[0] = stand_in.size(0);
      planned.tensors.push_back(PlanTensor(name, shape, config, options, path));
      all.push_back(planned.tensors.back());
    }
    groups_.push_back(std::move(planned));
  }
  // Llama 3's RoPE scaling travels as llama.cpp's converter writes it: the per-frequency divisors, f32, last.
  if (const std::vector<double> divisors = RopeFrequencyDivisors(config); !divisors.empty()) {
    const std::vector<float> values(divisors.begin(), divisors.end());
    rope_freqs_.resize(values.size() * sizeof(float));
    std::memcpy(rope_freqs_.data(), values.data(), rope_freqs_.size());
  }

  SetMetadata(writer_.metadata(), config, PredominantBlockType(all), vocabulary, path, options.name);
  for (const PlannedTensor& tensor : all) {
    writer_.AddTensor(tensor.report.gguf_name, tensor.report.written, tensor.shape, nullptr, tensor.report.bytes);
  }
  if (!rope_freqs_.empty()) {
    writer_.AddTensor("rope_freqs.weight", QuantType::kF32, {static_cast<int64_t>(rope_freqs_.size() / sizeof(float))},
                      nullptr, rope_freqs_.size());
  }
  writer_.Begin();
}

LmGgufStream::~LmGgufStream() = default;

void LmGgufStream::Write(const std::vector<LmTensorData>& tensors) {
  Require(next_group_ < groups_.size(), "{}: more tensor groups than planned", path_);
  Group& group = groups_[next_group_++];
  const LmFamily& family = FamilyOf(config_);
  std::vector<std::pair<std::string, torch::Tensor>> values;
  std::vector<std::pair<std::string, torch::Tensor>> packed_rows;  // packed weights' bytes as [rows, row bytes]
  std::optional<QuantType> packed_type;
  bool one_packed_type = true;
  std::map<std::string, PackedWeights> packed;
  for (const LmTensorData& tensor : tensors) {
    values.emplace_back(tensor.name, tensor.value.detach().to(torch::kCPU, torch::kFloat32));
    if (tensor.packed == nullptr) continue;
    Require(tensor.packed->boosted_index.empty(),
            "{}: '{}' keeps {} weights exactly beside its codes (residual precision boosting), which a GGUF cannot "
            "hold; write the GGUF from a model trained or quantized without RPB",
            path_, tensor.name, tensor.packed->boosted_index.size());
    one_packed_type = one_packed_type && (!packed_type || *packed_type == tensor.packed->layout.type);
    packed_type = tensor.packed->layout.type;
    const int64_t rows = tensor.packed->layout.rows;
    packed_rows.emplace_back(tensor.name, torch::from_blob(const_cast<uint8_t*>(tensor.packed->data()),
                                                           {rows, static_cast<int64_t>(tensor.packed->size()) / rows},
                                                           torch::kUInt8));
  }
  if (family.fuse_for_checkpoint != nullptr) {
    family.fuse_for_checkpoint(values);
    // Packed parts are fused the same way, as rows of bytes, where the parts share one type; otherwise the fused
    // tensor is quantized from its values.
    try {
      if (one_packed_type) family.fuse_for_checkpoint(packed_rows);
    } catch (const Error&) {
      packed_rows.clear();
    }
    if (!one_packed_type) packed_rows.clear();
  }
  for (const auto& [name, rows] : packed_rows) {
    const torch::Tensor bytes = rows.contiguous();
    packed[name] = {Layout{*packed_type, rows.size(0), 0},
                    std::vector<uint8_t>(bytes.data_ptr<uint8_t>(), bytes.data_ptr<uint8_t>() + bytes.numel()), nullptr,
                    0};
  }
  Require(values.size() == group.tensors.size(), "{}: a group of {} tensors, {} planned", path_, values.size(),
          group.tensors.size());
  for (size_t i = 0; i < values.size(); ++i) {
    PlannedTensor& planned = group.tensors[i];
    Require(values[i].first == planned.report.hf_name, "{}: tensor '{}' arrived where '{}' was planned", path_,
            values[i].first, planned.report.hf_name);
    const auto found = packed.find(values[i].first);
    const std::vector<uint8_t> data =
        EncodeTensor(planned, values[i].second, found != packed.end() ? &found->second : nullptr, config_, path_);
    writer_.WriteNext(data.data(), data.size());
    report_.tensors.push_back(planned.report);
  }
}

LmGgufReport LmGgufStream::Commit() {
  Require(next_group_ == groups_.size(), "{}: {} of the {} tensor groups written", path_, next_group_, groups_.size());
  if (!rope_freqs_.empty()) {
    writer_.WriteNext(rope_freqs_.data(), rope_freqs_.size());
    LmGgufTensorReport rope;
    rope.hf_name = "(rope scaling)";
    rope.gguf_name = "rope_freqs.weight";
    rope.bytes = static_cast<int64_t>(rope_freqs_.size());
    report_.tensors.push_back(rope);
  }
  writer_.Commit();
  report_.file_bytes = static_cast<int64_t>(fs::file_size(path_));
  return report_;
}

std::vector<std::vector<LmTensorShape>> ParameterShapeGroups(CausalLmImpl& model) {
  const auto parameters = model.named_parameters();
  std::vector<std::vector<LmTensorShape>> out;
  for (const std::vector<std::string>& group : ParameterGroups(model)) {
    out.emplace_back();
    for (const std::string& name : group) out.back().emplace_back(name, parameters[name].sizes().vec());
  }
  return out;
}

LmGgufReport WriteLmGguf(CausalLmImpl& model, const std::string& tokenizer_dir, const LmGgufOptions& options,
                         const std::string& path, const std::map<std::string, PackedWeights>* packed,
                         const LmWeightSource* weights) {
  torch::NoGradGuard no_grad;
  LmGgufStream stream(model.config(), ParameterShapeGroups(model), tokenizer_dir, options, path);
  for (const std::vector<std::string>& group : ParameterGroups(model)) {
    if (weights != nullptr) LoadLmParameters(model, *weights, group);
    stream.Write(GroupData(model, group, packed));
    if (weights != nullptr) ReleaseLmParameters(model, group);
  }
  return stream.Commit();
}

}  // namespace atq
