// What every tokenizer shares: Decode over DecodeToken, encoding a whole file, and reading a GGUF file's embedded vocabulary
// (tokenizer.ggml.*) into the tokenizer its tokenizer.ggml.model names.
#include "io/tokenizer.h"

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "io/gpt2_tokenizer.h"
#include "io/hf_tokenizer.h"
#include "io/mapped_file.h"
#include "io/score_bpe_tokenizer.h"
#include "io/strict_json.h"
#include "io/tensor_file.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"

namespace atq {
namespace {

constexpr std::string_view kModelKey = "tokenizer.ggml.model";
constexpr std::string_view kTokensKey = "tokenizer.ggml.tokens";
constexpr std::string_view kMergesKey = "tokenizer.ggml.merges";
constexpr std::string_view kScoresKey = "tokenizer.ggml.scores";
constexpr std::string_view kTokenTypeKey = "tokenizer.ggml.token_type";
constexpr std::string_view kAddSpacePrefixKey = "tokenizer.ggml.add_space_prefix";
constexpr std::string_view kPreTokenizerKey = "tokenizer.ggml.pre";

// A special token id from the metadata: absent gives `fallback` (-1 when outside the vocabulary); -1 or
// 0xFFFFFFFF, the "none" writers use, gives -1; any other id outside the vocabulary is an error.
int32_t SpecialTokenId(const GgufMetadata& metadata, std::string_view key, int32_t fallback, size_t vocab_size) {
  const GgufValue* value = metadata.Find(key);
  if (value == nullptr) return fallback >= 0 && static_cast<size_t>(fallback) < vocab_size ? fallback : -1;
  const int64_t id = metadata.GetInt(key);
  if (id == -1 || id == int64_t{UINT32_MAX}) return -1;
  Require(id >= 0 && static_cast<uint64_t>(id) < vocab_size,
          "{}: metadata key '{}' is {}, outside the vocabulary of {} tokens", metadata.source(), key, id, vocab_size);
  return static_cast<int32_t>(id);
}

std::unique_ptr<Tokenizer> LoadGgufGpt2(const GgufMetadata& metadata) {
  std::vector<std::string> tokens = metadata.GetStringArray(kTokensKey);
  const std::vector<std::string>& merges = metadata.GetStringArray(kMergesKey);
  Gpt2VocabularySource source;
  source.tokens = fmt::format("{}: {}", metadata.source(), kTokensKey);
  source.merges = fmt::format("{}: {}", metadata.source(), kMergesKey);
  source.merge_unit = "entry";
  source.first_merge_number = 0;
  if (metadata.Contains(kPreTokenizerKey)) source.pre = metadata.GetString(kPreTokenizerKey);
  const int32_t bos = SpecialTokenId(metadata, "tokenizer.ggml.bos_token_id", -1, tokens.size());
  const int32_t eos = SpecialTokenId(metadata, "tokenizer.ggml.eos_token_id", -1, tokens.size());
  return std::make_unique<Gpt2Tokenizer>(std::move(tokens), merges, source, bos, eos);
}

std::unique_ptr<Tokenizer> LoadGgufLlama(const GgufMetadata& metadata) {
  ScoreVocabulary vocabulary;
  vocabulary.source = metadata.source();
  vocabulary.pieces = metadata.GetStringArray(kTokensKey);
  const size_t count = vocabulary.pieces.size();
  Require(count > 0, "{}: metadata key '{}' holds no tokens", metadata.source(), kTokensKey);
  // llama.cpp reads scores and types when present: 0 and "normal" otherwise.
  if (metadata.Contains(kScoresKey)) {
    vocabulary.scores = metadata.GetFloatArray(kScoresKey);
    Require(vocabulary.scores.size() == count, "{}: metadata key '{}' has {} entries but '{}' has {}",
            metadata.source(), kScoresKey, vocabulary.scores.size(), kTokensKey, count);
  } else {
    vocabulary.scores.assign(count, 0.0f);
  }
  if (metadata.Contains(kTokenTypeKey)) {
    const std::vector<int64_t> types = metadata.GetIntArray(kTokenTypeKey);
    Require(types.size() == count, "{}: metadata key '{}' has {} entries but '{}' has {}", metadata.source(),
            kTokenTypeKey, types.size(), kTokensKey, count);
    vocabulary.kinds.reserve(count);
    for (size_t id = 0; id < count; ++id) {
      Require(types[id] >= 0 && types[id] <= static_cast<int64_t>(PieceKind::kByte),
              "{}: metadata key '{}': token {} has type {}, not 0..6", metadata.source(), kTokenTypeKey, id, types[id]);
      vocabulary.kinds.push_back(static_cast<PieceKind>(types[id]));
    }
  } else {
    vocabulary.kinds.assign(count, PieceKind::kNormal);
  }
  // llama.cpp's defaults for SPM vocabularies: <unk> 0, BOS 1, EOS 2.
  vocabulary.unk_id = SpecialTokenId(metadata, "tokenizer.ggml.unknown_token_id", 0, count);
  vocabulary.bos_id = SpecialTokenId(metadata, "tokenizer.ggml.bos_token_id", 1, count);
  vocabulary.eos_id = SpecialTokenId(metadata, "tokenizer.ggml.eos_token_id", 2, count);
  vocabulary.add_space_prefix = metadata.Contains(kAddSpacePrefixKey) ? metadata.GetBool(kAddSpacePrefixKey) : true;
  return std::make_unique<ScoreBpeTokenizer>(std::move(vocabulary));
}

}  // namespace

std::vector<int32_t> EncodeFile(const Tokenizer& tokenizer, const std::string& path) {
  const MappedFile file = MappedFile::Open(path);
  Progress progress("tokenize " + path, -1, "tokens");
  std::vector<int32_t> tokens =
      tokenizer.Encode(std::string_view(reinterpret_cast<const char*>(file.data()), file.size()));
  progress.Finish(fmt::format("{} tokens", tokens.size()));
  return tokens;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  int32_t previous = -1;
  for (const int32_t id : ids) {
    text += DecodeToken(id, previous);
    previous = id;
  }
  return text;
}

std::unique_ptr<Tokenizer> LoadGgufTokenizer(const GgufFile& gguf) {
  const GgufMetadata& metadata = gguf.metadata();
  const std::string& model = metadata.GetString(kModelKey);
  std::unique_ptr<Tokenizer> tokenizer;
  if (model == "gpt2") tokenizer = LoadGgufGpt2(metadata);
  if (model == "llama") tokenizer = LoadGgufLlama(metadata);
  if (tokenizer) {
    constexpr std::string_view kAddBos = "tokenizer.ggml.add_bos_token";
    if (metadata.Contains(kAddBos)) tokenizer->set_add_bos(metadata.GetBool(kAddBos));
    return tokenizer;
  }
  Fail("{}: tokenizer model '{}' ({}) is not supported; atq reads \"gpt2\" and \"llama\" vocabularies",
       metadata.source(), model.substr(0, 80), kModelKey);
}

std::unique_ptr<Tokenizer> LoadTokenizerAt(const std::string& path, int64_t vocab_size) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path folder = fs::is_directory(p) ? p : p.parent_path();
  const fs::path config = folder / "tokenizer_config.json";
  const std::string config_path = fs::is_regular_file(config) ? config.string() : std::string();
  std::unique_ptr<Tokenizer> tokenizer;
  if (fs::is_directory(p)) {
    if (fs::exists(p / "tokenizer.json")) return LoadHfTokenizer((p / "tokenizer.json").string(), config_path);
    if (fs::exists(p / "tokenizer.model")) {
      tokenizer = LoadSentencePieceTokenizer((p / "tokenizer.model").string());
    } else if (fs::exists(p / "vocab.json")) {
      tokenizer = LoadGpt2Tokenizer((p / "vocab.json").string(), (p / "merges.txt").string());
    } else if (fs::exists(p / "encoder.json")) {
      tokenizer = LoadGpt2Tokenizer((p / "encoder.json").string(), (p / "vocab.bpe").string());
    } else {
      Fail("{}: no tokenizer here (looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt, "
           "encoder.json + vocab.bpe)", path);
    }
  } else {
    Require(fs::exists(p), "{}: tokenizer not found", path);
    if (p.filename() == "tokenizer.json") return LoadHfTokenizer(path, config_path);
    if (p.extension() == ".model") {
      tokenizer = LoadSentencePieceTokenizer(path);
    } else if (p.extension() == ".json") {
      tokenizer = LoadGpt2Tokenizer(path, (folder / (p.filename() == "vocab.json" ? "merges.txt" : "vocab.bpe")).string());
    } else if (HasGgufMagic(path)) {
      return LoadGgufTokenizer(*TensorFile::Open(path).gguf());
    } else {
      Require(vocab_size > 0, "{}: a llama2.c tokenizer.bin needs the model's vocabulary size", path);
      return LoadLlama2cTokenizer(path, static_cast<int32_t>(vocab_size));
    }
  }
  // tokenizer_config.json's add_bos_token (what llama.cpp's converter copies into a GGUF) decides BOS.
  if (!config_path.empty()) {
    const nlohmann::json json = ReadStrictJsonFile(config_path);
    if (json.is_object() && json.contains("add_bos_token") && json["add_bos_token"].is_boolean()) {
      tokenizer->set_add_bos(json["add_bos_token"].get<bool>());
    }
  }
  return tokenizer;
}

}  // namespace atq
