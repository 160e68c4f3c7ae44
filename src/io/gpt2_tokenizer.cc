// GPT-2 byte-level BPE: OpenAI's files (encoder.json through a streaming JSON reader, vocab.bpe), the pre-tokenizer
// regex through PCRE2, and merges applied lowest rank first, leftmost on ties, as Hugging Face's BPE does.
#include "io/gpt2_tokenizer.h"

#include <array>
#include <limits>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/bpe_pre_tokenizers.h"
#include "io/mapped_file.h"
#include "io/regex.h"
#include "util/error.h"
#include "util/utf8.h"

namespace atq {
namespace {

// encoder.json holds 50,257 tokens; the largest vocabularies in use hold a few hundred thousand.
constexpr uint64_t kMaxTokens = std::numeric_limits<int32_t>::max();

// GPT-2's bytes_to_unicode(): bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves; the other 68 bytes
// take U+0100.. in byte order.
struct ByteAlphabet {
  static constexpr uint32_t kCodePoints = 256 + 68;
  std::array<std::string, 256> characters;  // byte -> UTF-8 of its character
  std::array<int16_t, kCodePoints> bytes;   // code point -> byte, -1 for none
};

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet table;
    table.bytes.fill(-1);
    uint32_t next = 256;
    for (uint32_t byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
      const uint32_t code_point = printable ? byte : next++;
      std::string& utf8 = table.characters[byte];
      if (code_point < 0x80) {
        utf8 = std::string(1, static_cast<char>(code_point));
      } else {
        utf8 = {static_cast<char>(0xC0 | (code_point >> 6)), static_cast<char>(0x80 | (code_point & 0x3F))};
      }
      table.bytes[code_point] = static_cast<int16_t>(byte);
    }
    return table;
  }();
  return alphabet;
}

// The bytes a spelling in GPT-2's alphabet stands for; false when a character is outside the alphabet.
bool SpellingToBytes(std::string_view spelling, std::string& bytes) {
  const ByteAlphabet& alphabet = Alphabet();
  bytes.clear();
  for (size_t i = 0; i < spelling.size();) {
    const auto lead = static_cast<unsigned char>(spelling[i]);
    uint32_t code_point = 0;
    if (lead < 0x80) {
      code_point = lead;
      i += 1;
    } else if ((lead & 0xE0) == 0xC0 && i + 1 < spelling.size() &&
               (static_cast<unsigned char>(spelling[i + 1]) & 0xC0) == 0x80) {
      code_point = (uint32_t{lead & 0x1Fu} << 6) | (static_cast<unsigned char>(spelling[i + 1]) & 0x3Fu);
      if (code_point < 0x80) return false;  // overlong
      i += 2;
    } else {
      return false;  // three- and four-byte characters are all outside the alphabet
    }
    if (code_point >= ByteAlphabet::kCodePoints || alphabet.bytes[code_point] < 0) return false;
    bytes += static_cast<char>(alphabet.bytes[code_point]);
  }
  return true;
}

// Streams encoder.json into (token, id) pairs without building a JSON tree; anything but one flat object of
// integers stops the parse with a message.
class EncoderJsonReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::vector<std::pair<std::string, uint64_t>> entries;
  std::string error;

  bool null() override { return Unexpected("null"); }
  bool boolean(bool) override { return Unexpected("a boolean"); }
  bool number_integer(number_integer_t value) override {
    if (depth_ != 1) return Unexpected("a number");
    return Fail(fmt::format("token {} has negative id {}", QuoteForMessage(key_), value));
  }
  bool number_unsigned(number_unsigned_t value) override {
    if (depth_ != 1) return Unexpected("a number");
    if (value >= kMaxTokens) return Fail(fmt::format("token {} has id {}, too large", QuoteForMessage(key_), value));
    entries.emplace_back(std::move(key_), value);
    return true;
  }
  bool number_float(number_float_t, const string_t& text) override {
    if (depth_ != 1) return Unexpected("a number");
    return Fail(fmt::format("token {} has id {}, not an integer", QuoteForMessage(key_), text));
  }
  bool string(string_t&) override { return Unexpected("a string"); }
  bool binary(binary_t&) override { return Unexpected("binary data"); }
  bool start_object(std::size_t) override {
    if (depth_ != 0) return Unexpected("an object");
    depth_ = 1;
    return true;
  }
  bool key(string_t& value) override {
    key_ = std::move(value);
    return true;
  }
  bool end_object() override {
    depth_ = 2;  // anything after the object is unexpected
    return true;
  }
  bool start_array(std::size_t) override { return Unexpected("an array"); }
  bool end_array() override { return Unexpected("the end of an array"); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    if (error.empty()) error = fmt::format("not valid JSON: {}", e.what());
    return false;
  }

 private:
  bool Fail(std::string message) {
    error = std::move(message);
    return false;
  }
  bool Unexpected(std::string_view what) {
    if (depth_ == 1) return Fail(fmt::format("token {} maps to {}, not an integer id", QuoteForMessage(key_), what));
    return Fail(fmt::format("must be a JSON object of token -> integer id, found {}", what));
  }

  int depth_ = 0;
  std::string key_;
};

// encoder.json: one object of token -> id, ids 0..N-1 each used once.
std::vector<std::string> ReadEncoderJson(const std::string& path) {
  const MappedFile file = MappedFile::Open(path);
  const auto* begin = reinterpret_cast<const char*>(file.data());
  EncoderJsonReader reader;
  const bool parsed = nlohmann::json::sax_parse(begin, begin + file.size(), &reader);
  if (!parsed || !reader.error.empty()) {
    Fail("{}: {}", path, reader.error.empty() ? std::string("not valid JSON") : reader.error);
  }
  Require(!reader.entries.empty(), "{}: holds no tokens", path);
  const size_t count = reader.entries.size();
  std::vector<std::string> tokens(count);
  std::vector<bool> assigned(count, false);
  std::unordered_set<std::string_view> seen;
  seen.reserve(count);
  for (auto& [token, id] : reader.entries) {
    Require(seen.insert(token).second, "{}: token {} appears twice", path, QuoteForMessage(token));
    Require(id < count, "{}: token {} has id {}, but {} tokens need ids 0..{} with none missing", path, QuoteForMessage(token),
            id, count, count - 1);
    Require(!assigned[id], "{}: id {} is given to both {} and {}", path, id, QuoteForMessage(tokens[id]), QuoteForMessage(token));
    assigned[id] = true;
    tokens[id] = token;  // copied: `seen` views the entries' strings
  }
  return tokens;
}

// vocab.bpe: an optional "#version" first line, then one "left right" merge per line.
std::vector<std::string> ReadVocabBpe(const std::string& path, size_t& first_merge_line) {
  const MappedFile file = MappedFile::Open(path);
  std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  std::vector<std::string> merges;
  first_merge_line = 1;
  size_t line_number = 0;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // '\r' is spelled U+010D inside tokens
    if (line_number == 1 && line.substr(0, 8) == "#version") {
      first_merge_line = 2;
      continue;
    }
    merges.emplace_back(line);
  }
  return merges;
}

}  // namespace

const std::string& Gpt2ByteCharacter(uint8_t byte) { return Alphabet().characters[byte]; }

Gpt2Tokenizer::Gpt2Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                             const Gpt2VocabularySource& source, int32_t bos, int32_t eos)
    : bos_(bos), eos_(eos) {
  const BpePreTokenizer* pre = FindBpePreTokenizer(source.pre);
  Require(pre != nullptr, "{}: pre-tokenizer '{}' is not one atq knows the regex of ({})", source.tokens,
          source.pre.substr(0, 80), BpePreTokenizerNames());
  pattern_ = std::make_unique<Regex>(OnigurumaToPcre2(pre->regex), fmt::format("{} pre-tokenizer", pre->name));
  ignore_merges_ = pre->ignore_merges;
  Require(!tokens.empty(), "{}: holds no tokens", source.tokens);
  Require(tokens.size() < kMaxTokens, "{}: {} tokens are more than int32 ids can number", source.tokens, tokens.size());
  const auto count = static_cast<int32_t>(tokens.size());
  Require(bos >= -1 && bos < count, "{}: BOS id {} is outside the vocabulary of {} tokens", source.tokens, bos, count);
  Require(eos >= -1 && eos < count, "{}: EOS id {} is outside the vocabulary of {} tokens", source.tokens, eos, count);

  std::unordered_map<std::string_view, int32_t> ids;  // spelling -> id; a repeated spelling keeps its last id
  ids.reserve(tokens.size());
  token_bytes_.resize(tokens.size());
  for (int32_t id = 0; id < count; ++id) {
    ids[tokens[id]] = id;
    if (!SpellingToBytes(tokens[id], token_bytes_[id])) {
      token_bytes_[id] = tokens[id];  // literal text
    } else if (ignore_merges_) {
      whole_words_.emplace(token_bytes_[id], id);
    }
  }
  for (int byte = 0; byte < 256; ++byte) {
    const std::string& spelling = Alphabet().characters[byte];
    const auto found = ids.find(spelling);
    Require(found != ids.end(), "{}: no token for byte 0x{:02X} (spelled {}); a byte-level vocabulary needs all 256",
            source.tokens, byte, QuoteForMessage(spelling));
    byte_tokens_[byte] = found->second;
  }

  Require(merges.size() < kMaxTokens, "{}: {} merges are too many", source.merges, merges.size());
  merges_.Reserve(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& merge = merges[rank];
    const size_t number = source.first_merge_number + rank;
    // llama.cpp splits at the first space after the first character, so a token may start with a space.
    const size_t space = merge.find(' ', 1);
    Require(space != std::string::npos && space + 1 < merge.size(),
            "{}: {} {}: merge {} is not two tokens separated by a space", source.merges, source.merge_unit, number,
            QuoteForMessage(merge));
    const std::string_view left(merge.data(), space);
    const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    const auto left_id = ids.find(left);
    const auto right_id = ids.find(right);
    for (const auto& [part, found] : {std::pair{left, left_id}, std::pair{right, right_id}}) {
      Require(found != ids.end(), "{}: {} {}: merge {} names {}, which is not a token of {}", source.merges,
              source.merge_unit, number, QuoteForMessage(merge), QuoteForMessage(part), source.tokens);
    }
    joined.assign(left);
    joined.append(right);
    const auto merged = ids.find(joined);
    Require(merged != ids.end(), "{}: {} {}: merge {} makes {}, which is not a token of {}", source.merges,
            source.merge_unit, number, QuoteForMessage(merge), QuoteForMessage(joined), source.tokens);
    merges_.Add(left_id->second, right_id->second, static_cast<int32_t>(rank), merged->second);
  }

}

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

std::vector<std::string_view> Gpt2Tokenizer::PreTokenize(std::string_view text) const {
  return pattern_->SplitIsolated(text);
}

std::vector<int32_t> Gpt2Tokenizer::MergeWord(std::string_view word) const {
  if (ignore_merges_) {
    const auto found = whole_words_.find(std::string(word));
    if (found != whole_words_.end()) return {found->second};
  }
  std::vector<int32_t> ids(word.size());
  for (size_t i = 0; i < word.size(); ++i) ids[i] = byte_tokens_[static_cast<unsigned char>(word[i])];
  merges_.Apply(ids);
  return ids;
}

void Gpt2Tokenizer::EncodeWord(std::string_view word, std::vector<int32_t>& out) const {
  cache_.Encode(word, out, [this](std::string_view piece) { return MergeWord(piece); });
}

std::vector<int32_t> Gpt2Tokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  for (const std::string_view piece : PreTokenize(text)) EncodeWord(piece, ids);
  return ids;
}

const std::string& Gpt2Tokenizer::token_bytes(int32_t id) const {
  Require(id >= 0 && id < vocab_size(), "GPT-2 tokenizer: token id {} is outside the vocabulary (0..{})", id,
          vocab_size() - 1);
  return token_bytes_[id];
}

std::string Gpt2Tokenizer::DecodeToken(int32_t id, int32_t /*previous*/) const { return token_bytes(id); }

std::unique_ptr<Tokenizer> LoadGpt2Tokenizer(const std::string& encoder_json, const std::string& vocab_bpe) {
  std::vector<std::string> tokens = ReadEncoderJson(encoder_json);
  Gpt2VocabularySource source;
  source.tokens = encoder_json;
  source.merges = vocab_bpe;
  const std::vector<std::string> merges = ReadVocabBpe(vocab_bpe, source.first_merge_number);
  // GPT-2 has one special token, <|endoftext|>, used as both BOS and EOS.
  int32_t end_of_text = -1;
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (tokens[id] == "<|endoftext|>") end_of_text = static_cast<int32_t>(id);
  }
  return std::make_unique<Gpt2Tokenizer>(std::move(tokens), merges, source, end_of_text, end_of_text);
}

}  // namespace atq
