// A SAX handler around nlohmann's own DOM builder: the document is nlohmann's, the key check is ours.
#include "io/strict_json.h"

#include <unordered_set>
#include <vector>

#include "io/input_file.h"
#include "util/error.h"
#include "util/strings.h"
#include "util/utf8.h"

namespace atq {
namespace {

using nlohmann::json;

// Real files nest 3-6 deep; the limit only keeps hostile input from costing deep recursion anywhere.
constexpr int kMaxJsonDepth = 64;

class StrictBuilder {
 public:
  StrictBuilder(json& result, const std::string& what) : dom_(result, /*allow_exceptions=*/true), what_(what) {}

  bool null() { return dom_.null(); }
  bool boolean(bool value) { return dom_.boolean(value); }
  bool number_integer(json::number_integer_t value) { return dom_.number_integer(value); }
  bool number_unsigned(json::number_unsigned_t value) { return dom_.number_unsigned(value); }
  bool number_float(json::number_float_t value, const json::string_t& text) {
    return dom_.number_float(value, text);
  }
  bool string(json::string_t& value) { return dom_.string(value); }
  bool binary(json::binary_t& value) { return dom_.binary(value); }
  bool start_object(std::size_t size) {
    keys_.emplace_back();
    return dom_.start_object(size);
  }
  bool key(json::string_t& key) {
    if (!keys_.back().insert(key).second) {
      Fail("{}: duplicate key {} in JSON (a reader would silently keep only one)", what_, QuoteForMessage(key));
    }
    return dom_.key(key);
  }
  bool end_object() {
    keys_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t size) { return dom_.start_array(size); }
  bool end_array() { return dom_.end_array(); }
  bool parse_error(std::size_t position, const std::string& token, const nlohmann::detail::exception& error) {
    return dom_.parse_error(position, token, error);
  }

 private:
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<std::unordered_set<std::string>> keys_;  // one per open object
  const std::string& what_;
};

}  // namespace

json ParseStrictJson(std::string_view text, const std::string& what) {
  const size_t bad = FindInvalidUtf8(text);
  Require(bad == std::string_view::npos, "{}: not valid UTF-8 (byte {} of {}, 0x{:02X})", what, bad, text.size(),
          bad == std::string_view::npos ? 0u : static_cast<unsigned>(static_cast<unsigned char>(text[bad])));
  // nlohmann stops at a NUL between tokens as if the text ended there, silently ignoring what follows.
  const size_t nul = text.find('\0');
  Require(nul == std::string_view::npos, "{}: not valid JSON: NUL byte at byte {} of {}", what, nul, text.size());
  Require(BracketNestingDepth(text, kMaxJsonDepth) <= kMaxJsonDepth, "{}: JSON nested more than {} levels deep", what,
          kMaxJsonDepth);
  json result;
  StrictBuilder builder(result, what);
  try {
    json::sax_parse(text.begin(), text.end(), &builder);
  } catch (const json::exception& e) {
    Fail("{}: not valid JSON: {}", what, e.what());
  }
  return result;
}

json ReadStrictJsonFile(const std::string& path) { return ParseStrictJson(ReadInputText(path), path); }

}  // namespace atq
