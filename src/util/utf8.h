// UTF-8 validation for text read from files (JSON headers, GGUF keys, tensor names).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace atq {

// Index of the first byte that breaks UTF-8 (overlong forms, surrogates and code points past U+10FFFF
// included), or npos when the text is valid.
size_t FindInvalidUtf8(std::string_view text);

inline bool IsValidUtf8(std::string_view text) { return FindInvalidUtf8(text) == std::string_view::npos; }

// Text from a file in single quotes for an error message: at most 80 bytes (cut back to whole UTF-8 characters,
// the full length said after), control bytes as \xNN.
std::string QuoteForMessage(std::string_view text);

}  // namespace atq
