// A tokenizer with one token per byte, for feeding calibration text to small random models (vocabulary 256).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer.h"

namespace atq::testutil {

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> Encode(std::string_view text) const override { return {text.begin(), text.end()}; }
  std::string DecodeToken(int32_t id, int32_t) const override { return std::string(1, static_cast<char>(id)); }
  int32_t vocab_size() const override { return 256; }
  int32_t bos_id() const override { return -1; }
  int32_t eos_id() const override { return -1; }
};

}  // namespace atq::testutil
