// Strict JSON for every JSON file a user hands atq (safetensors headers, index files, config.json, tokenizer
// files, checkpoints' descriptions): valid UTF-8, no NUL, nesting at most 64 deep, duplicate object keys
// rejected (nlohmann would keep one silently), and parsed in linear time (a SAX pass that builds the document
// and checks keys as they come; nlohmann's callback parser rescans each parent object on close, quadratic in
// the number of keys). Errors read "WHAT: ...".
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace atq {

nlohmann::json ParseStrictJson(std::string_view text, const std::string& what);

// The same checks over a document that must be one object, handed over member by member: on_member(key, value)
// runs as each member's value is complete, and the value is dropped after it. Memory is one member's, not the
// document's (a safetensors header of 200k tensors is 200k small objects). Errors: "WHAT must be a JSON object,
// got TYPE" for another top-level value, and as ParseStrictJson otherwise.
void StreamStrictJsonObject(std::string_view text, const std::string& what,
                            const std::function<void(std::string key, nlohmann::json value)>& on_member);

// ParseStrictJson of a whole input file (ReadInputText: regular files only).
nlohmann::json ReadStrictJsonFile(const std::string& path);

}  // namespace atq
