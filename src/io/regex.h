// Pre-tokenizer regexes through PCRE2 (Unicode properties, look-ahead, inline case-insensitive groups), with the
// few spellings where Oniguruma, the engine Hugging Face's tokenizers compile them with, reads differently
// translated first.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace atq {

class Regex {
 public:
  // `what` names the pattern's origin for errors ("/x/tokenizer.json: pre_tokenizer Split"). Throws atq::Error
  // when PCRE2 cannot compile it.
  Regex(std::string_view pattern, std::string what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The [begin, end) byte spans of the non-overlapping matches in `text`, leftmost first. Invalid UTF-8 matches
  // nothing, so it falls into the gaps between matches.
  std::vector<std::pair<size_t, size_t>> Matches(std::string_view text) const;

  // `text` with the gaps and matches in order, every byte in exactly one piece (empty pieces left out).
  std::vector<std::string_view> SplitIsolated(std::string_view text) const;

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
  std::string what_;
};

// Oniguruma's `\s` is Unicode's White_Space property, which PCRE2's is not by one character (U+0085, NEXT LINE);
// the pattern with `\s` and `\S` spelled so PCRE2 matches what Oniguruma matches.
std::string OnigurumaToPcre2(std::string_view pattern);

}  // namespace atq
