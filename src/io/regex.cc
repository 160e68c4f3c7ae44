// PCRE2 with UTF, UCP and JIT where available; matching falls back to the interpreter when the JIT's stack runs
// out on pathological input.
#include "io/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "util/error.h"

namespace atq {

struct Regex::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

std::string OnigurumaToPcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  int class_depth = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's') {
        out += class_depth > 0 ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (next == 'S' && class_depth == 0) {
        out += "[^\\s\\x{85}]";
      } else {
        // `\S` inside a class stays as PCRE2 reads it (U+0085 counts as non-space there); no tokenizer in use
        // writes it.
        out += '\\';
        out += next;
      }
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

Regex::Regex(std::string_view pattern, std::string what) : compiled_(std::make_unique<Compiled>()), what_(std::move(what)) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code, &error_offset, nullptr);
  if (compiled_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    Fail("{}: PCRE2 cannot compile the pattern at offset {}: {}", what_, error_offset,
         reinterpret_cast<const char*>(message));
  }
  // Without JIT (unsupported CPU, or a PCRE2 built without it) pcre2_match interprets the pattern instead.
  pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() = default;

std::vector<std::pair<size_t, size_t>> Regex::Matches(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> spans;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), &pcre2_match_data_free);
  Require(match != nullptr, "{}: out of memory for PCRE2 match data", what_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  while (offset < text.size()) {
    int found = pcre2_match(compiled_->code, subject, text.size(), offset, 0, match.get(), nullptr);
    if (found < 0 && found != PCRE2_ERROR_NOMATCH) {
      // A JIT stack limit on pathological input: the interpreter keeps its backtracking state on the heap.
      found = pcre2_match(compiled_->code, subject, text.size(), offset, PCRE2_NO_JIT, match.get(), nullptr);
    }
    if (found == PCRE2_ERROR_NOMATCH) break;
    if (found < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(found, message, sizeof(message));
      Fail("{}: PCRE2 failed at byte {} of {}: {}", what_, offset, text.size(), reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match.get());
    if (span[1] > span[0]) spans.emplace_back(span[0], span[1]);
    if (span[1] > offset) {
      offset = span[1];
    } else {  // an empty match: on to the next character
      ++offset;
      while (offset < text.size() && (static_cast<unsigned char>(text[offset]) & 0xC0) == 0x80) ++offset;
    }
  }
  return spans;
}

std::vector<std::string_view> Regex::SplitIsolated(std::string_view text) const {
  std::vector<std::string_view> pieces;
  size_t at = 0;
  for (const auto& [begin, end] : Matches(text)) {
    if (begin > at) pieces.push_back(text.substr(at, begin - at));
    pieces.push_back(text.substr(begin, end - begin));
    at = end;
  }
  if (at < text.size()) pieces.push_back(text.substr(at));
  return pieces;
}

}  // namespace atq
