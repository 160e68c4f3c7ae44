// tokenizer.json as the Hugging Face tokenizers library reads it. Normalizers, pre-tokenizers and decoders are
// tables of {type, factory}; the BPE model follows tokenizers' models/bpe (characters, then byte fallback or the
// unknown token, then merges by rank). Tokenizers.js is the reference the tests hold this against.
#include "io/hf_tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/bpe_merges.h"
#include "io/bpe_pre_tokenizers.h"
#include "io/gpt2_tokenizer.h"
#include "io/regex.h"
#include "io/score_bpe_tokenizer.h"
#include "io/strict_json.h"
#include "util/error.h"
#include "util/utf8.h"

namespace atq {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581

// Where in the file a component sits, for messages: "/x/tokenizer.json: pre_tokenizer.pretokenizers[1]".
struct Where {
  std::string file;
  std::string path;
  std::string operator()() const { return fmt::format("{}: {}", file, path); }
  Where Child(std::string_view key) const { return {file, fmt::format("{}.{}", path, key)}; }
  Where Item(size_t index) const { return {file, fmt::format("{}[{}]", path, index)}; }
};

const Json& Member(const Json& object, std::string_view key, const Where& where) {
  Require(object.is_object(), "{}: expected an object, found {}", where(), object.type_name());
  const auto found = object.find(key);
  Require(found != object.end(), "{}: has no '{}'", where(), key);
  return *found;
}

std::string StringMember(const Json& object, std::string_view key, const Where& where) {
  const Json& value = Member(object, key, where);
  Require(value.is_string(), "{}.{}: expected a string, found {}", where(), key, value.type_name());
  return value.get<std::string>();
}

bool BoolMember(const Json& object, std::string_view key, bool fallback, const Where& where) {
  const auto found = object.find(key);
  if (found == object.end() || found->is_null()) return fallback;
  Require(found->is_boolean(), "{}.{}: expected true or false, found {}", where(), key, found->dump());
  return found->get<bool>();
}

// The length of the UTF-8 character at text[at]; a byte that does not start a valid character counts alone.
size_t CharLength(std::string_view text, size_t at) {
  const auto lead = static_cast<unsigned char>(text[at]);
  const size_t length = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
  if (length == 1 || at + length > text.size()) return 1;
  return IsValidUtf8(text.substr(at, length)) ? length : 1;
}

// Replaces every occurrence of `from` (non-empty) in `text` by `to`.
std::string ReplaceAll(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  size_t at = 0;
  for (size_t found; (found = text.find(from, at)) != std::string_view::npos; at = found + from.size()) {
    out.append(text.substr(at, found - at));
    out.append(to);
  }
  out.append(text.substr(at));
  return out;
}

// A Split/Replace pattern: {"String": literal} or {"Regex": pattern}.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;

  static Pattern Read(const Json& json, const Where& where) {
    Pattern pattern;
    Require(json.is_object() && json.size() == 1, "{}: expected {{\"String\": ...}} or {{\"Regex\": ...}}", where());
    if (json.contains("String")) {
      pattern.literal = StringMember(json, "String", where);
      Require(!pattern.literal.empty(), "{}: an empty String pattern matches nothing", where());
    } else if (json.contains("Regex")) {
      pattern.regex = std::make_unique<Regex>(OnigurumaToPcre2(StringMember(json, "Regex", where)), where());
    } else {
      Fail("{}: pattern kind '{}' is not String or Regex", where(), json.begin().key());
    }
    return pattern;
  }

  std::vector<std::pair<size_t, size_t>> Matches(std::string_view text) const {
    if (regex) return regex->Matches(text);
    std::vector<std::pair<size_t, size_t>> spans;
    for (size_t at = text.find(literal); at != std::string_view::npos; at = text.find(literal, at + literal.size())) {
      spans.emplace_back(at, at + literal.size());
    }
    return spans;
  }
};

// ---- normalizers ----

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void Apply(std::string& text) const = 0;
};
using NormalizerPtr = std::unique_ptr<Normalizer>;
NormalizerPtr MakeNormalizer(const Json& json, const Where& where);

struct SequenceNormalizer final : Normalizer {
  std::vector<NormalizerPtr> steps;
  void Apply(std::string& text) const override {
    for (const auto& step : steps) step->Apply(text);
  }
};

// NFC/NFD/NFKC/NFKD through utf8proc, run over the valid UTF-8 of the text (invalid bytes pass through).
struct UnicodeNormalizer final : Normalizer {
  utf8proc_option_t options;
  explicit UnicodeNormalizer(int flags) : options(static_cast<utf8proc_option_t>(UTF8PROC_STABLE | flags)) {}
  void Apply(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    size_t at = 0;
    while (at < text.size()) {
      size_t end = at;
      while (end < text.size() && (CharLength(text, end) > 1 || static_cast<unsigned char>(text[end]) < 0x80)) {
        end += CharLength(text, end);
      }
      if (end > at) {
        utf8proc_uint8_t* mapped = nullptr;
        const utf8proc_ssize_t length = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + at),
                                                     static_cast<utf8proc_ssize_t>(end - at), &mapped, options);
        Require(length >= 0, "Unicode normalization failed: {}", utf8proc_errmsg(length));
        out.append(reinterpret_cast<const char*>(mapped), static_cast<size_t>(length));
        std::free(mapped);
      }
      if (end < text.size()) out += text[end++];  // an invalid byte, kept
      at = end;
    }
    text = std::move(out);
  }
};

struct LowercaseNormalizer final : Normalizer {
  void Apply(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t at = 0; at < text.size();) {
      const size_t length = CharLength(text, at);
      utf8proc_int32_t code_point = -1;
      utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + at), static_cast<utf8proc_ssize_t>(length),
                       &code_point);
      if (code_point < 0) {
        out += text[at];
      } else {
        utf8proc_uint8_t buffer[4];
        const utf8proc_ssize_t written = utf8proc_encode_char(utf8proc_tolower(code_point), buffer);
        out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(written));
      }
      at += length;
    }
    text = std::move(out);
  }
};

struct ReplaceNormalizer final : Normalizer {
  Pattern pattern;
  std::string content;
  void Apply(std::string& text) const override {
    if (!pattern.regex) {
      text = ReplaceAll(text, pattern.literal, content);
      return;
    }
    std::string out;
    size_t at = 0;
    for (const auto& [begin, end] : pattern.Matches(text)) {
      out.append(text, at, begin - at);
      out += content;
      at = end;
    }
    out.append(text, at, std::string::npos);
    text = std::move(out);
  }
};

struct PrependNormalizer final : Normalizer {
  std::string prefix;
  void Apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix);
  }
};

bool IsWhiteSpace(utf8proc_int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The code point at text[at] (of `length` bytes), or -1 for an invalid byte.
utf8proc_int32_t CodePointAt(std::string_view text, size_t at, size_t length) {
  utf8proc_int32_t code_point = -1;
  utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + at), static_cast<utf8proc_ssize_t>(length),
                   &code_point);
  return code_point;
}

struct StripNormalizer final : Normalizer {
  bool left = true, right = true;
  void Apply(std::string& text) const override {
    size_t begin = 0, end = text.size();
    while (left && begin < end && IsWhiteSpace(CodePointAt(text, begin, CharLength(text, begin)))) {
      begin += CharLength(text, begin);
    }
    while (right && end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
      if (!IsWhiteSpace(CodePointAt(text, start, end - start))) break;
      end = start;
    }
    text = text.substr(begin, end - begin);
  }
};

struct NormalizerRow {
  std::string_view type;
  NormalizerPtr (*make)(const Json& json, const Where& where);
};

NormalizerPtr MakeUnicode(int flags) { return std::make_unique<UnicodeNormalizer>(flags); }

const NormalizerRow kNormalizers[] = {
    {"Sequence",
     [](const Json& json, const Where& where) -> NormalizerPtr {
       auto sequence = std::make_unique<SequenceNormalizer>();
       const Json& steps = Member(json, "normalizers", where);
       Require(steps.is_array(), "{}.normalizers: expected an array", where());
       for (size_t i = 0; i < steps.size(); ++i) {
         sequence->steps.push_back(MakeNormalizer(steps[i], where.Child("normalizers").Item(i)));
       }
       return sequence;
     }},
    {"NFC", [](const Json&, const Where&) { return MakeUnicode(UTF8PROC_COMPOSE); }},
    {"NFD", [](const Json&, const Where&) { return MakeUnicode(UTF8PROC_DECOMPOSE); }},
    {"NFKC", [](const Json&, const Where&) { return MakeUnicode(UTF8PROC_COMPOSE | UTF8PROC_COMPAT); }},
    {"NFKD", [](const Json&, const Where&) { return MakeUnicode(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT); }},
    {"Lowercase", [](const Json&, const Where&) -> NormalizerPtr { return std::make_unique<LowercaseNormalizer>(); }},
    {"Replace",
     [](const Json& json, const Where& where) -> NormalizerPtr {
       auto replace = std::make_unique<ReplaceNormalizer>();
       replace->pattern = Pattern::Read(Member(json, "pattern", where), where.Child("pattern"));
       replace->content = StringMember(json, "content", where);
       return replace;
     }},
    {"Prepend",
     [](const Json& json, const Where& where) -> NormalizerPtr {
       auto prepend = std::make_unique<PrependNormalizer>();
       prepend->prefix = StringMember(json, "prepend", where);
       return prepend;
     }},
    {"Strip",
     [](const Json& json, const Where& where) -> NormalizerPtr {
       auto strip = std::make_unique<StripNormalizer>();
       strip->left = BoolMember(json, "strip_left", true, where);
       strip->right = BoolMember(json, "strip_right", true, where);
       return strip;
     }},
};

template <typename Row, size_t N>
const Row& FindRow(const Row (&rows)[N], const Json& json, std::string_view kind, const Where& where) {
  const std::string type = StringMember(json, "type", where);
  for (const Row& row : rows) {
    if (row.type == type) return row;
  }
  std::string known;
  for (const Row& row : rows) known += fmt::format("{}{}", known.empty() ? "" : ", ", row.type);
  Fail("{}: {} '{}' is not supported (atq reads {})", where(), kind, type, known);
}

NormalizerPtr MakeNormalizer(const Json& json, const Where& where) {
  return FindRow(kNormalizers, json, "normalizer", where).make(json, where);
}

// ---- pre-tokenizers ----

// One piece of text on its way to the model; `at_start` is true for the first piece of the input text.
struct Piece {
  std::string text;
  bool at_start = false;
};
using Pieces = std::vector<Piece>;

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void Apply(Pieces& pieces) const = 0;
};
using PreTokenizerPtr = std::unique_ptr<PreTokenizer>;
PreTokenizerPtr MakePreTokenizer(const Json& json, const Where& where);

struct SequencePreTokenizer final : PreTokenizer {
  std::vector<PreTokenizerPtr> steps;
  void Apply(Pieces& pieces) const override {
    for (const auto& step : steps) step->Apply(pieces);
  }
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits each piece at the spans of `matches` as the tokenizers library's SplitDelimiterBehavior does.
void SplitPieces(Pieces& pieces, SplitBehavior behavior, bool invert,
                 const std::function<std::vector<std::pair<size_t, size_t>>(std::string_view)>& matches) {
  Pieces out;
  for (Piece& piece : pieces) {
    // Alternating (span, is_delimiter) covering the piece.
    std::vector<std::pair<std::string_view, bool>> parts;
    const std::string_view text = piece.text;
    size_t at = 0;
    for (const auto& [begin, end] : matches(text)) {
      if (begin > at) parts.emplace_back(text.substr(at, begin - at), invert);
      parts.emplace_back(text.substr(begin, end - begin), !invert);
      at = end;
    }
    if (at < text.size()) parts.emplace_back(text.substr(at), invert);

    std::vector<std::string> texts;
    bool pending_next = false;  // MergedWithNext: a delimiter waiting for what follows
    bool last_was_delimiter = false;
    for (const auto& [part, delimiter] : parts) {
      switch (behavior) {
        case SplitBehavior::kRemoved:
          if (!delimiter) texts.emplace_back(part);
          break;
        case SplitBehavior::kIsolated:
          texts.emplace_back(part);
          break;
        case SplitBehavior::kMergedWithPrevious:
          if (delimiter && !texts.empty() && !last_was_delimiter) {
            texts.back().append(part);
          } else {
            texts.emplace_back(part);
          }
          break;
        case SplitBehavior::kMergedWithNext:
          if (pending_next) {
            texts.back().append(part);
          } else {
            texts.emplace_back(part);
          }
          pending_next = delimiter;
          break;
        case SplitBehavior::kContiguous:
          if (delimiter && last_was_delimiter) {
            texts.back().append(part);
          } else {
            texts.emplace_back(part);
          }
          break;
      }
      last_was_delimiter = delimiter;
    }
    for (size_t i = 0; i < texts.size(); ++i) out.push_back({std::move(texts[i]), piece.at_start && i == 0});
  }
  pieces = std::move(out);
}

struct SplitPreTokenizer final : PreTokenizer {
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  void Apply(Pieces& pieces) const override {
    SplitPieces(pieces, behavior, invert, [this](std::string_view text) { return pattern.Matches(text); });
  }
};

SplitBehavior ReadBehavior(const Json& json, const Where& where) {
  const std::string name = StringMember(json, "behavior", where);
  static const std::pair<std::string_view, SplitBehavior> kBehaviors[] = {
      {"Removed", SplitBehavior::kRemoved},
      {"Isolated", SplitBehavior::kIsolated},
      {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
      {"MergedWithNext", SplitBehavior::kMergedWithNext},
      {"Contiguous", SplitBehavior::kContiguous}};
  for (const auto& [known, behavior] : kBehaviors) {
    if (name == known) return behavior;
  }
  Fail("{}.behavior: '{}' is not Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous", where(), name);
}

// Bytes to GPT-2's printable alphabet, after an optional leading space and GPT-2's regex split.
struct ByteLevelPreTokenizer final : PreTokenizer {
  bool add_prefix_space = false;
  std::unique_ptr<Regex> regex;
  void Apply(Pieces& pieces) const override {
    if (add_prefix_space) {
      for (Piece& piece : pieces) {
        if (piece.text.empty() || piece.text[0] != ' ') piece.text.insert(0, " ");
      }
    }
    if (regex) {
      SplitPieces(pieces, SplitBehavior::kIsolated, false, [this](std::string_view text) { return regex->Matches(text); });
    }
    for (Piece& piece : pieces) {
      std::string spelled;
      spelled.reserve(piece.text.size() * 2);
      for (const char byte : piece.text) spelled += Gpt2ByteCharacter(static_cast<uint8_t>(byte));
      piece.text = std::move(spelled);
    }
  }
};

enum class PrependScheme { kAlways, kFirst, kNever };

PrependScheme ReadPrependScheme(const Json& json, const Where& where) {
  if (json.contains("prepend_scheme")) {
    const std::string scheme = StringMember(json, "prepend_scheme", where);
    if (scheme == "always") return PrependScheme::kAlways;
    if (scheme == "first") return PrependScheme::kFirst;
    if (scheme == "never") return PrependScheme::kNever;
    Fail("{}.prepend_scheme: '{}' is not always, first or never", where(), scheme);
  }
  return BoolMember(json, "add_prefix_space", true, where) ? PrependScheme::kAlways : PrependScheme::kNever;
}

std::string ReadReplacement(const Json& json, const Where& where) {
  const std::string replacement = StringMember(json, "replacement", where);
  Require(!replacement.empty(), "{}.replacement: empty", where());
  return replacement;
}

// Spaces to the replacement character (U+2581), one prepended as the scheme says, then a split before each.
struct MetaspacePreTokenizer final : PreTokenizer {
  std::string replacement;
  PrependScheme scheme = PrependScheme::kAlways;
  bool split = true;
  void Apply(Pieces& pieces) const override {
    for (Piece& piece : pieces) {
      piece.text = ReplaceAll(piece.text, " ", replacement);
      const bool prepend = scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && piece.at_start);
      if (prepend && piece.text.compare(0, replacement.size(), replacement) != 0) piece.text.insert(0, replacement);
    }
    if (split) {
      const Pattern mark{replacement, nullptr};
      SplitPieces(pieces, SplitBehavior::kMergedWithNext, false,
                  [&mark](std::string_view text) { return mark.Matches(text); });
    }
  }
};

struct DigitsPreTokenizer final : PreTokenizer {
  bool individual = false;
  void Apply(Pieces& pieces) const override {
    SplitPieces(pieces, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false,
                [](std::string_view text) {
                  std::vector<std::pair<size_t, size_t>> spans;
                  for (size_t i = 0; i < text.size(); ++i) {
                    if (text[i] >= '0' && text[i] <= '9') spans.emplace_back(i, i + 1);
                  }
                  return spans;
                });
  }
};

struct PreTokenizerRow {
  std::string_view type;
  PreTokenizerPtr (*make)(const Json& json, const Where& where);
};

const PreTokenizerRow kPreTokenizers[] = {
    {"Sequence",
     [](const Json& json, const Where& where) -> PreTokenizerPtr {
       auto sequence = std::make_unique<SequencePreTokenizer>();
       const Json& steps = Member(json, "pretokenizers", where);
       Require(steps.is_array(), "{}.pretokenizers: expected an array", where());
       for (size_t i = 0; i < steps.size(); ++i) {
         sequence->steps.push_back(MakePreTokenizer(steps[i], where.Child("pretokenizers").Item(i)));
       }
       return sequence;
     }},
    {"Split",
     [](const Json& json, const Where& where) -> PreTokenizerPtr {
       auto split = std::make_unique<SplitPreTokenizer>();
       split->pattern = Pattern::Read(Member(json, "pattern", where), where.Child("pattern"));
       split->behavior = ReadBehavior(json, where);
       split->invert = BoolMember(json, "invert", false, where);
       return split;
     }},
    {"ByteLevel",
     [](const Json& json, const Where& where) -> PreTokenizerPtr {
       auto byte_level = std::make_unique<ByteLevelPreTokenizer>();
       byte_level->add_prefix_space = BoolMember(json, "add_prefix_space", true, where);
       if (BoolMember(json, "use_regex", true, where)) {
         // GPT-2's pattern, which the ByteLevel pre-tokenizer applies when use_regex is set.
         byte_level->regex = std::make_unique<Regex>(OnigurumaToPcre2(FindBpePreTokenizer("gpt-2")->regex), where());
       }
       return byte_level;
     }},
    {"Metaspace",
     [](const Json& json, const Where& where) -> PreTokenizerPtr {
       auto metaspace = std::make_unique<MetaspacePreTokenizer>();
       metaspace->replacement = ReadReplacement(json, where);
       metaspace->scheme = ReadPrependScheme(json, where);
       metaspace->split = BoolMember(json, "split", true, where);
       return metaspace;
     }},
    {"Digits",
     [](const Json& json, const Where& where) -> PreTokenizerPtr {
       auto digits = std::make_unique<DigitsPreTokenizer>();
       digits->individual = BoolMember(json, "individual_digits", false, where);
       return digits;
     }},
};

PreTokenizerPtr MakePreTokenizer(const Json& json, const Where& where) {
  return FindRow(kPreTokenizers, json, "pre-tokenizer", where).make(json, where);
}

// Whether the pre-tokenizer (or a step of its sequence) is ByteLevel, and the first Split regex it holds.
void DescribePreTokenizer(const Json& json, bool& byte_level, std::string& pattern) {
  if (!json.is_object()) return;
  const std::string type = json.value("type", "");
  if (type == "ByteLevel") byte_level = true;
  if (type == "Split" && pattern.empty() && json.contains("pattern") && json["pattern"].contains("Regex")) {
    pattern = json["pattern"]["Regex"].get<std::string>();
  }
  if (type == "Sequence" && json.contains("pretokenizers")) {
    for (const Json& step : json["pretokenizers"]) DescribePreTokenizer(step, byte_level, pattern);
  }
}

// Whether the text gets a leading U+2581 (a Prepend normalizer or a prepending Metaspace), as llama.cpp's
// add_space_prefix says it.
bool AddsSpacePrefix(const Json& json) {
  if (!json.is_object()) return false;
  const std::string type = json.value("type", "");
  if (type == "Prepend") return json.value("prepend", "") == kMetaspace;
  if (type == "Metaspace") {
    return json.contains("prepend_scheme") ? json.value("prepend_scheme", "") != "never"
                                           : json.value("add_prefix_space", true);
  }
  for (const char* list : {"normalizers", "pretokenizers"}) {
    if (!json.contains(list) || !json[list].is_array()) continue;
    for (const Json& step : json[list]) {
      if (AddsSpacePrefix(step)) return true;
    }
  }
  return false;
}

// ---- decoders (one token at a time, so generation can print as it goes) ----

struct DecodeStep {
  virtual ~DecodeStep() = default;
  // `first`: the token starts the decoded text (nothing but special tokens before it).
  virtual void Apply(std::string& token, bool first) const = 0;
};
using DecodeStepPtr = std::unique_ptr<DecodeStep>;

// GPT-2's alphabet read back: code point -> byte, -1 outside it.
const std::vector<int16_t>& AlphabetBytes() {
  static const std::vector<int16_t> table = [] {
    std::vector<int16_t> bytes(512, -1);
    for (int b = 0; b < 256; ++b) {
      const std::string& character = Gpt2ByteCharacter(static_cast<uint8_t>(b));
      bytes[static_cast<size_t>(CodePointAt(character, 0, character.size()))] = static_cast<int16_t>(b);
    }
    return bytes;
  }();
  return table;
}

struct ByteLevelDecode final : DecodeStep {
  void Apply(std::string& token, bool) const override {
    const std::vector<int16_t>& alphabet = AlphabetBytes();
    std::string bytes;
    bytes.reserve(token.size());
    for (size_t at = 0; at < token.size();) {
      const size_t length = CharLength(token, at);
      const utf8proc_int32_t code_point = CodePointAt(token, at, length);
      if (code_point >= 0 && static_cast<size_t>(code_point) < alphabet.size() && alphabet[code_point] >= 0) {
        bytes += static_cast<char>(alphabet[code_point]);
      } else {
        bytes.append(token, at, length);  // outside the alphabet: kept as written
      }
      at += length;
    }
    token = std::move(bytes);
  }
};

struct ReplaceDecode final : DecodeStep {
  std::string from, to;
  void Apply(std::string& token, bool) const override { token = ReplaceAll(token, from, to); }
};

struct ByteFallbackDecode final : DecodeStep {
  void Apply(std::string& token, bool) const override {
    if (const std::optional<uint8_t> byte = ParseBytePiece(token)) token = std::string(1, static_cast<char>(*byte));
  }
};

// Strip after Fuse works on the whole text: only its start is seen token by token.
struct StripDecode final : DecodeStep {
  std::string content;
  size_t start = 0, stop = 0;
  bool whole_text = false;
  void Apply(std::string& token, bool first) const override {
    if (!whole_text || first) {
      for (size_t i = 0; i < start && token.compare(0, content.size(), content) == 0; ++i) token.erase(0, content.size());
    }
    if (!whole_text) {
      for (size_t i = 0; i < stop && token.size() >= content.size() &&
                         token.compare(token.size() - content.size(), content.size(), content) == 0;
           ++i) {
        token.erase(token.size() - content.size());
      }
    }
  }
};

struct MetaspaceDecode final : DecodeStep {
  std::string replacement;
  PrependScheme scheme = PrependScheme::kAlways;
  void Apply(std::string& token, bool first) const override {
    token = ReplaceAll(token, replacement, " ");
    if (first && scheme != PrependScheme::kNever && !token.empty() && token[0] == ' ') token.erase(0, 1);
  }
};

struct DecoderState {
  std::vector<DecodeStepPtr> steps;
  bool fused = false;  // a Fuse step came before: later steps see the joined text
};
void AddDecoder(const Json& json, const Where& where, DecoderState& state);

struct DecoderRow {
  std::string_view type;
  void (*add)(const Json& json, const Where& where, DecoderState& state);
};

const DecoderRow kDecoders[] = {
    {"Sequence",
     [](const Json& json, const Where& where, DecoderState& state) {
       const Json& steps = Member(json, "decoders", where);
       Require(steps.is_array(), "{}.decoders: expected an array", where());
       for (size_t i = 0; i < steps.size(); ++i) AddDecoder(steps[i], where.Child("decoders").Item(i), state);
     }},
    {"ByteLevel",
     [](const Json&, const Where&, DecoderState& state) { state.steps.push_back(std::make_unique<ByteLevelDecode>()); }},
    {"Replace",
     [](const Json& json, const Where& where, DecoderState& state) {
       const Json& pattern = Member(json, "pattern", where);
       Require(pattern.is_object() && pattern.contains("String"), "{}.pattern: atq's decoder replaces String patterns only",
               where());
       auto replace = std::make_unique<ReplaceDecode>();
       replace->from = StringMember(pattern, "String", where.Child("pattern"));
       Require(!replace->from.empty(), "{}.pattern: empty", where());
       replace->to = StringMember(json, "content", where);
       state.steps.push_back(std::move(replace));
     }},
    {"ByteFallback",
     [](const Json&, const Where&, DecoderState& state) { state.steps.push_back(std::make_unique<ByteFallbackDecode>()); }},
    {"Fuse", [](const Json&, const Where&, DecoderState& state) { state.fused = true; }},
    {"Strip",
     [](const Json& json, const Where& where, DecoderState& state) {
       auto strip = std::make_unique<StripDecode>();
       strip->content = StringMember(json, "content", where);
       const Json& start = Member(json, "start", where);
       const Json& stop = Member(json, "stop", where);
       Require(start.is_number_unsigned() && stop.is_number_unsigned(), "{}: start and stop must be counts", where());
       strip->start = start.get<size_t>();
       strip->stop = stop.get<size_t>();
       strip->whole_text = state.fused;
       Require(!strip->whole_text || strip->stop == 0,
               "{}: stripping the end of the joined text is not supported (atq decodes token by token)", where());
       state.steps.push_back(std::move(strip));
     }},
    {"Metaspace",
     [](const Json& json, const Where& where, DecoderState& state) {
       auto metaspace = std::make_unique<MetaspaceDecode>();
       metaspace->replacement = ReadReplacement(json, where);
       metaspace->scheme = ReadPrependScheme(json, where);
       state.steps.push_back(std::move(metaspace));
     }},
};

void AddDecoder(const Json& json, const Where& where, DecoderState& state) {
  FindRow(kDecoders, json, "decoder", where).add(json, where, state);
}

// ---- added tokens: a byte trie matched leftmost-longest, as the library's Aho-Corasick matcher does ----

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, lstrip, rstrip, single_word, normalized;
};

class AddedTokenMatcher {
 public:
  void Add(const AddedToken& token) {
    int32_t node = 0;
    for (const char c : token.content) {
      const uint64_t key = Key(node, c);
      auto found = children_.find(key);
      if (found == children_.end()) {
        found = children_.emplace(key, static_cast<int32_t>(terminal_.size())).first;
        terminal_.push_back(-1);
      }
      node = found->second;
    }
    if (terminal_[node] < 0) terminal_[node] = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(token);
  }
  bool empty() const { return tokens_.empty(); }

  // Splits `text` into plain runs (id -1) and added tokens, honouring lstrip/rstrip/single_word.
  std::vector<std::pair<std::string_view, int32_t>> Split(std::string_view text) const {
    std::vector<std::pair<std::string_view, int32_t>> parts;
    size_t plain = 0;  // start of the current plain run
    for (size_t at = 0; at < text.size();) {
      int32_t node = 0, best = -1;
      size_t best_end = at;
      for (size_t i = at; i < text.size(); ++i) {
        const auto found = children_.find(Key(node, text[i]));
        if (found == children_.end()) break;
        node = found->second;
        if (terminal_[node] >= 0) {
          best = terminal_[node];
          best_end = i + 1;
        }
      }
      if (best < 0 || !WordBoundaryOk(tokens_[best], text, at, best_end)) {
        at += CharLength(text, at);
        continue;
      }
      const AddedToken& token = tokens_[best];
      size_t begin = at, end = best_end;
      if (token.lstrip) {
        while (begin > plain && IsAsciiSpace(text[begin - 1])) --begin;
      }
      if (token.rstrip) {
        while (end < text.size() && IsAsciiSpace(text[end])) ++end;
      }
      if (begin > plain) parts.emplace_back(text.substr(plain, begin - plain), -1);
      parts.emplace_back(text.substr(begin, end - begin), token.id);
      plain = at = end;
    }
    if (plain < text.size()) parts.emplace_back(text.substr(plain), -1);
    return parts;
  }

 private:
  static uint64_t Key(int32_t node, char c) {
    return (uint64_t{static_cast<uint32_t>(node)} << 8) | static_cast<unsigned char>(c);
  }
  static bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
  static bool IsWordByte(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }
  static bool WordBoundaryOk(const AddedToken& token, std::string_view text, size_t begin, size_t end) {
    if (!token.single_word) return true;
    return (begin == 0 || !IsWordByte(text[begin - 1])) && (end == text.size() || !IsWordByte(text[end]));
  }

  std::unordered_map<uint64_t, int32_t> children_;
  std::vector<int32_t> terminal_ = {-1};  // node -> index into tokens_, -1 when no token ends there
  std::vector<AddedToken> tokens_;
};

// ---- the tokenizer ----

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const std::string& path, const std::string& config_path);

  std::vector<int32_t> Encode(std::string_view text) const override;
  std::string DecodeToken(int32_t id, int32_t previous) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }

  HfVocabularyView Describe() const;

 private:
  void ReadModel(const Json& model, const Where& where);
  void ReadAddedTokens(const Json& json, const Where& where);
  void ReadSpecialIds(const Json& json, const std::string& config_path);
  int32_t IdOf(std::string_view spelling) const;
  void EncodePiece(std::string_view piece, std::vector<int32_t>& out) const;
  std::vector<int32_t> ModelEncode(std::string_view word) const;
  void EncodePlain(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
  std::string DecodeText(int32_t id, bool first) const;

  std::string path_;
  std::vector<std::string> tokens_;  // id -> spelling
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<uint8_t> added_kind_;  // id -> 0 model token, 1 added, 2 added special
  BpeMerges merges_;
  NormalizerPtr normalizer_;
  PreTokenizerPtr pre_tokenizer_;
  DecoderState decoder_;
  AddedTokenMatcher raw_added_, normalized_added_;
  std::array<int32_t, 256> byte_pieces_{};  // byte -> <0xXX> piece id, -1 when none
  int32_t unk_ = -1, bos_ = -1, eos_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  HfVocabularyView view_;  // what Describe() does not derive from the members above: merges, pre-tokenizer facts

  BpeWordCache cache_;
};

void HfTokenizer::ReadModel(const Json& model, const Where& where) {
  const std::string type = StringMember(model, "type", where);
  Require(type == "BPE", "{}: model type '{}' is not supported (atq reads BPE)", where(), type);
  const auto dropout = model.find("dropout");
  Require(dropout == model.end() || dropout->is_null() || (dropout->is_number() && dropout->get<double>() == 0.0),
          "{}.dropout: BPE dropout (random merges) is not supported", where());
  const Json& vocab = Member(model, "vocab", where);
  Require(vocab.is_object() && !vocab.empty(), "{}.vocab: expected a non-empty object of token -> id", where());
  vocab_.reserve(vocab.size());
  for (const auto& [spelling, id] : vocab.items()) {
    Require(id.is_number_unsigned() && id.get<uint64_t>() < uint64_t{std::numeric_limits<int32_t>::max()},
            "{}.vocab: token {} has id {}, not an id", where(), QuoteForMessage(spelling), id.dump());
    const auto value = id.get<int32_t>();
    if (static_cast<size_t>(value) >= tokens_.size()) tokens_.resize(static_cast<size_t>(value) + 1);
    Require(tokens_[value].empty(), "{}.vocab: id {} is given to both {} and {}", where(), value,
            QuoteForMessage(tokens_[value]), QuoteForMessage(spelling));
    tokens_[value] = spelling;
    vocab_.emplace(spelling, value);
  }
  byte_fallback_ = BoolMember(model, "byte_fallback", false, where);
  fuse_unk_ = BoolMember(model, "fuse_unk", false, where);
  ignore_merges_ = BoolMember(model, "ignore_merges", false, where);
  for (auto [key, target] : {std::pair<const char*, std::string*>{"continuing_subword_prefix", &prefix_},
                             {"end_of_word_suffix", &suffix_}}) {
    if (model.contains(key) && !model[key].is_null()) *target = StringMember(model, key, where);
  }
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    const std::string unk = StringMember(model, "unk_token", where);
    const auto found = vocab_.find(unk);
    Require(found != vocab_.end(), "{}.unk_token: {} is not in the vocabulary", where(), QuoteForMessage(unk));
    unk_ = found->second;
  }
  byte_pieces_.fill(-1);
  for (int byte = 0; byte < 256; ++byte) {
    const auto found = vocab_.find(fmt::format("<0x{:02X}>", byte));
    if (found != vocab_.end()) byte_pieces_[byte] = found->second;
  }

  const Json& merges = Member(model, "merges", where);
  Require(merges.is_array(), "{}.merges: expected an array", where());
  merges_.Reserve(merges.size());
  view_.merges.reserve(merges.size());
  std::string left, right;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& merge = merges[rank];
    const Where at = where.Child("merges").Item(rank);
    if (merge.is_string()) {  // "left right"
      const std::string& text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      Require(space != std::string::npos && space > 0 && space + 1 < text.size() &&
                  text.find(' ', space + 1) == std::string::npos,
              "{}: merge {} is not two tokens separated by one space", at(), QuoteForMessage(text));
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else {
      Require(merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string(),
              "{}: a merge is \"left right\" or [\"left\", \"right\"], found {}", at(), merge.dump().substr(0, 80));
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    }
    const auto left_id = vocab_.find(left), right_id = vocab_.find(right);
    Require(left_id != vocab_.end() && right_id != vocab_.end(), "{}: merge of {} and {} names a token not in the vocabulary",
            at(), QuoteForMessage(left), QuoteForMessage(right));
    // With a continuing-subword prefix the right side's prefix is dropped from the merged spelling.
    const std::string joined =
        left + (prefix_.empty() || right.compare(0, prefix_.size(), prefix_) != 0 ? right : right.substr(prefix_.size()));
    const auto merged = vocab_.find(joined);
    Require(merged != vocab_.end(), "{}: merge makes {}, which is not in the vocabulary", at(), QuoteForMessage(joined));
    merges_.Add(left_id->second, right_id->second, static_cast<int32_t>(rank), merged->second);
    view_.merges.push_back(left + " " + right);
  }
}

void HfTokenizer::ReadAddedTokens(const Json& json, const Where& where) {
  added_kind_.assign(tokens_.size(), 0);
  const auto found = json.find("added_tokens");
  if (found == json.end() || found->is_null()) return;
  Require(found->is_array(), "{}: expected an array", where());
  for (size_t i = 0; i < found->size(); ++i) {
    const Json& entry = (*found)[i];
    const Where at = where.Item(i);
    const Json& id = Member(entry, "id", at);
    Require(id.is_number_unsigned() && id.get<uint64_t>() < uint64_t{std::numeric_limits<int32_t>::max()},
            "{}.id: {} is not an id", at(), id.dump());
    AddedToken token{id.get<int32_t>(),
                     StringMember(entry, "content", at),
                     BoolMember(entry, "special", false, at),
                     BoolMember(entry, "lstrip", false, at),
                     BoolMember(entry, "rstrip", false, at),
                     BoolMember(entry, "single_word", false, at),
                     BoolMember(entry, "normalized", false, at)};
    Require(!token.content.empty(), "{}.content: empty", at());
    if (static_cast<size_t>(token.id) >= tokens_.size()) {
      tokens_.resize(static_cast<size_t>(token.id) + 1);
      added_kind_.resize(tokens_.size(), 0);
    }
    Require(tokens_[token.id].empty() || tokens_[token.id] == token.content,
            "{}: id {} is {} here but {} in the model's vocabulary", at(), token.id, QuoteForMessage(token.content),
            QuoteForMessage(tokens_[token.id]));
    tokens_[token.id] = token.content;
    vocab_.emplace(token.content, token.id);
    added_kind_[token.id] = token.special ? 2 : 1;
    (token.normalized ? normalized_added_ : raw_added_).Add(token);
  }
}

int32_t HfTokenizer::IdOf(std::string_view spelling) const {
  const auto found = vocab_.find(std::string(spelling));
  return found == vocab_.end() ? -1 : found->second;
}

// BOS/EOS: tokenizer_config.json's bos_token / eos_token (a string or {"content": ...}) and add_bos_token; without
// them, the post-processor's template (a special token before $A is the BOS it adds).
void HfTokenizer::ReadSpecialIds(const Json& json, const std::string& config_path) {
  bool add_bos = false;
  const Json* post = json.contains("post_processor") ? &json["post_processor"] : nullptr;
  if (post != nullptr && post->is_object() && post->value("type", "") == "TemplateProcessing" &&
      post->contains("single") && (*post)["single"].is_array() && !(*post)["single"].empty()) {
    const Json& first = (*post)["single"][0];
    if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].contains("id") &&
        first["SpecialToken"]["id"].is_string()) {
      bos_ = IdOf(first["SpecialToken"]["id"].get<std::string>());
      add_bos = bos_ >= 0;
    }
  }
  if (!config_path.empty()) {
    const Json config = ReadStrictJsonFile(config_path);
    Require(config.is_object(), "{}: expected a JSON object", config_path);
    const auto token_id = [&](const char* key) -> std::optional<int32_t> {
      if (!config.contains(key)) return std::nullopt;
      const Json& value = config[key];
      if (value.is_null()) return -1;
      const Json& content = value.is_object() && value.contains("content") ? value["content"] : value;
      Require(content.is_string(), "{}: {} must be a token string, found {}", config_path, key, value.dump());
      const int32_t id = IdOf(content.get<std::string>());
      Require(id >= 0, "{}: {} {} is not a token of the tokenizer", config_path, key,
              QuoteForMessage(content.get<std::string>()));
      return id;
    };
    if (const auto bos = token_id("bos_token")) bos_ = *bos;
    if (const auto eos = token_id("eos_token")) eos_ = *eos;
    if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
      add_bos = config["add_bos_token"].get<bool>() && bos_ >= 0;
    }
  }
  set_add_bos(add_bos);
}

HfTokenizer::HfTokenizer(const std::string& path, const std::string& config_path) : path_(path) {
  const Json json = ReadStrictJsonFile(path);
  Require(json.is_object(), "{}: expected a JSON object (a Hugging Face tokenizer.json)", path);
  const Where root{path, ""};
  const auto where = [&](const char* key) { return Where{path, key}; };
  ReadModel(Member(json, "model", root), where("model"));
  ReadAddedTokens(json, where("added_tokens"));
  if (json.contains("normalizer") && !json["normalizer"].is_null()) {
    normalizer_ = MakeNormalizer(json["normalizer"], where("normalizer"));
  }
  if (json.contains("pre_tokenizer") && !json["pre_tokenizer"].is_null()) {
    pre_tokenizer_ = MakePreTokenizer(json["pre_tokenizer"], where("pre_tokenizer"));
    DescribePreTokenizer(json["pre_tokenizer"], view_.byte_level, view_.split_pattern);
  }
  view_.add_space_prefix = (json.contains("normalizer") && AddsSpacePrefix(json["normalizer"])) ||
                           (json.contains("pre_tokenizer") && AddsSpacePrefix(json["pre_tokenizer"]));
  if (json.contains("decoder") && !json["decoder"].is_null()) AddDecoder(json["decoder"], where("decoder"), decoder_);
  ReadSpecialIds(json, config_path);

  for (size_t id = 0; id < tokens_.size(); ++id) {
    Require(!tokens_[id].empty(), "{}: id {} has no token (ids run 0..{} with none missing)", path, id,
            tokens_.size() - 1);
  }
}

HfVocabularyView HfTokenizer::Describe() const {
  HfVocabularyView view = view_;
  view.tokens = tokens_;
  view.special.resize(tokens_.size());
  view.added.resize(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    view.special[id] = added_kind_[id] == 2;
    view.added[id] = added_kind_[id] != 0;
  }
  view.byte_fallback = byte_fallback_;
  view.unk_id = unk_;
  return view;
}

// tokenizers' BPE::tokenize: the whole word if ignore_merges and it is a token; else its characters (with the
// subword prefix and word suffix), each a token, or its <0xXX> bytes, or the unknown token (runs fused), merged.
std::vector<int32_t> HfTokenizer::ModelEncode(std::string_view word) const {
  if (ignore_merges_) {
    const auto found = vocab_.find(std::string(word));
    if (found != vocab_.end()) return {found->second};
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  std::string spelling;
  bool last_unknown = false;
  for (size_t at = 0; at < word.size();) {
    const size_t length = CharLength(word, at);
    spelling.assign(at > 0 ? prefix_ : std::string());
    spelling.append(word.substr(at, length));
    if (at + length == word.size()) spelling += suffix_;
    at += length;
    const auto found = vocab_.find(spelling);
    if (found != vocab_.end()) {
      symbols.push_back(found->second);
      last_unknown = false;
      continue;
    }
    if (byte_fallback_) {
      const std::string_view bytes = word.substr(at - length, length);
      const bool all = std::all_of(bytes.begin(), bytes.end(),
                                   [&](char b) { return byte_pieces_[static_cast<unsigned char>(b)] >= 0; });
      if (all) {
        for (const char b : bytes) symbols.push_back(byte_pieces_[static_cast<unsigned char>(b)]);
        last_unknown = false;
        continue;
      }
    }
    Require(unk_ >= 0, "{}: no token for {} and the model has no unknown token", path_,
            QuoteForMessage(word.substr(at - length, length)));
    if (!(fuse_unk_ && last_unknown)) symbols.push_back(unk_);
    last_unknown = true;
  }
  merges_.Apply(symbols);
  return symbols;
}

void HfTokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  cache_.Encode(piece, out, [this](std::string_view word) { return ModelEncode(word); });
}

void HfTokenizer::EncodePlain(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
  std::string normalized(text);
  if (normalizer_) normalizer_->Apply(normalized);
  const auto run = [&](std::string_view part, bool start) {
    Pieces pieces{{std::string(part), start}};
    if (pre_tokenizer_) pre_tokenizer_->Apply(pieces);
    for (const Piece& piece : pieces) EncodePiece(piece.text, out);
  };
  if (normalized_added_.empty()) {
    run(normalized, at_start);
    return;
  }
  bool first = at_start;
  for (const auto& [part, id] : normalized_added_.Split(normalized)) {
    if (id >= 0) {
      out.push_back(id);
    } else {
      run(part, first);
    }
    first = false;
  }
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  size_t offset = 0;
  for (const auto& [part, id] : raw_added_.Split(text)) {
    if (id >= 0) {
      ids.push_back(id);
    } else {
      EncodePlain(part, offset == 0, ids);
    }
    offset += part.size();
  }
  return ids;
}

// Added tokens go through the decoder too (Gemma's added whitespace runs are spelled with U+2581).
std::string HfTokenizer::DecodeText(int32_t id, bool first) const {
  Require(id >= 0 && id < vocab_size(), "{}: token id {} is outside the vocabulary (0..{})", path_, id, vocab_size() - 1);
  if (added_kind_[id] == 2) return "";  // special tokens are not text
  std::string token = tokens_[id];
  for (const auto& step : decoder_.steps) step->Apply(token, first);
  return token;
}

// Token by token, "the start of the text" is the first token or one right after a special token such as BOS.
std::string HfTokenizer::DecodeToken(int32_t id, int32_t previous) const {
  return DecodeText(id, previous < 0 || (previous < vocab_size() && added_kind_[previous] == 2));
}

// As the library decodes with skip_special_tokens: special tokens dropped, then the chain over what is left, so
// only the first remaining token is the start.
std::string HfTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  bool first = true;
  for (const int32_t id : ids) {
    std::string piece = DecodeText(id, first);
    if (added_kind_[id] != 2) first = false;
    text += piece;
  }
  return text;
}

}  // namespace

std::unique_ptr<Tokenizer> LoadHfTokenizer(const std::string& tokenizer_json, const std::string& tokenizer_config) {
  return std::make_unique<HfTokenizer>(tokenizer_json, tokenizer_config);
}

HfVocabularyView DescribeHfVocabulary(const Tokenizer& tokenizer) {
  const auto* hf = dynamic_cast<const HfTokenizer*>(&tokenizer);
  Require(hf != nullptr, "this tokenizer was not read from a tokenizer.json");
  return hf->Describe();
}

}  // namespace atq
