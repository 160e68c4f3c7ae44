// A SAX handler around nlohmann's own DOM builder: the document is nlohmann's, the key check is ours.
#include "io/strict_json.h"

#include <memory>
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

// Streams the members of a top-level object: one StrictBuilder per member value, handed on when complete.
class MemberStreamer {
 public:
  using OnMember = std::function<void(std::string key, json value)>;
  MemberStreamer(const std::string& what, const OnMember& on_member) : what_(what), on_member_(on_member) {}

  bool null() { return Scalar("null", [&](StrictBuilder& b) { return b.null(); }); }
  bool boolean(bool v) { return Scalar("boolean", [&](StrictBuilder& b) { return b.boolean(v); }); }
  bool number_integer(json::number_integer_t v) {
    return Scalar("integer", [&](StrictBuilder& b) { return b.number_integer(v); });
  }
  bool number_unsigned(json::number_unsigned_t v) {
    return Scalar("integer", [&](StrictBuilder& b) { return b.number_unsigned(v); });
  }
  bool number_float(json::number_float_t v, const json::string_t& text) {
    return Scalar("number", [&](StrictBuilder& b) { return b.number_float(v, text); });
  }
  bool string(json::string_t& v) { return Scalar("string", [&](StrictBuilder& b) { return b.string(v); }); }
  bool binary(json::binary_t& v) { return Scalar("binary", [&](StrictBuilder& b) { return b.binary(v); }); }
  bool start_object(std::size_t size) {
    if (!inside_) {
      inside_ = true;
      return true;
    }
    ++level_;
    return builder_->start_object(size);
  }
  bool key(json::string_t& key) {
    if (level_ > 0) return builder_->key(key);
    if (!keys_.insert(key).second) {
      Fail("{}: duplicate key {} in JSON (a reader would silently keep only one)", what_, QuoteForMessage(key));
    }
    key_ = key;
    value_ = json();
    builder_ = std::make_unique<StrictBuilder>(value_, what_);
    return true;
  }
  bool end_object() {
    if (level_ == 0) return true;  // the top-level object closes
    const bool ok = builder_->end_object();
    return Closed(ok);
  }
  bool start_array(std::size_t size) {
    if (!inside_) Fail("{} must be a JSON object, got array", what_);
    ++level_;
    return builder_->start_array(size);
  }
  bool end_array() { return Closed(builder_->end_array()); }
  bool parse_error(std::size_t position, const std::string& token, const nlohmann::detail::exception& error) {
    json unused;
    StrictBuilder reporter(unused, what_);
    return reporter.parse_error(position, token, error);
  }

 private:
  template <typename Forward>
  bool Scalar(std::string_view type, Forward forward) {
    if (!inside_) Fail("{} must be a JSON object, got {}", what_, type);
    const bool ok = forward(*builder_);
    return level_ == 0 ? Complete(ok) : ok;
  }
  bool Closed(bool ok) {
    --level_;
    return level_ == 0 ? Complete(ok) : ok;
  }
  bool Complete(bool ok) {
    builder_.reset();
    on_member_(std::move(key_), std::move(value_));
    return ok;
  }

  const std::string& what_;
  const OnMember& on_member_;
  bool inside_ = false;  // the top-level object has opened
  int level_ = 0;        // open objects and arrays inside the current member's value
  std::unordered_set<std::string> keys_;
  std::string key_;
  json value_;
  std::unique_ptr<StrictBuilder> builder_;
};

void CheckJsonText(std::string_view text, const std::string& what) {
  const size_t bad = FindInvalidUtf8(text);
  Require(bad == std::string_view::npos, "{}: not valid UTF-8 (byte {} of {}, 0x{:02X})", what, bad, text.size(),
          bad == std::string_view::npos ? 0u : static_cast<unsigned>(static_cast<unsigned char>(text[bad])));
  // nlohmann stops at a NUL between tokens as if the text ended there, silently ignoring what follows.
  const size_t nul = text.find('\0');
  Require(nul == std::string_view::npos, "{}: not valid JSON: NUL byte at byte {} of {}", what, nul, text.size());
  Require(BracketNestingDepth(text, kMaxJsonDepth) <= kMaxJsonDepth, "{}: JSON nested more than {} levels deep", what,
          kMaxJsonDepth);
}

}  // namespace

void StreamStrictJsonObject(std::string_view text, const std::string& what,
                            const std::function<void(std::string key, json value)>& on_member) {
  CheckJsonText(text, what);
  MemberStreamer streamer(what, on_member);
  try {
    json::sax_parse(text.begin(), text.end(), &streamer);
  } catch (const json::exception& e) {
    Fail("{}: not valid JSON: {}", what, e.what());
  }
}

json ParseStrictJson(std::string_view text, const std::string& what) {
  CheckJsonText(text, what);
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
