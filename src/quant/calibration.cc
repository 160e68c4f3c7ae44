// Seeded calibration windows from a text file.
#include "quant/calibration.h"

#include <fstream>
#include <random>
#include <sstream>

#include <torch/torch.h>

#include "util/error.h"
#include "io/input_file.h"

namespace atq {

torch::Tensor SampleCalibration(const Tokenizer& tokenizer, const std::string& text_file, int64_t samples,
                                int64_t length, uint64_t seed) {
  Require(samples > 0 && length > 1, "calibration needs samples > 0 and length > 1, got {} and {}", samples, length);
  const std::string text = ReadInputText(text_file);
  Require(!text.empty(), "{}: the calibration text is empty", text_file);

  std::mt19937_64 generator(seed);
  std::uniform_int_distribution<size_t> position(0, text.size() - 1);
  torch::Tensor ids = torch::empty({samples, length}, torch::kInt64);
  auto rows = ids.accessor<int64_t, 2>();
  for (int64_t sample = 0; sample < samples; ++sample) {
    size_t start = position(generator);
    if (start > 0) {  // to the start of the next line (or of the text), so no window begins inside a word
      const size_t newline = text.find('\n', start);
      start = newline == std::string::npos || newline + 1 >= text.size() ? 0 : newline + 1;
    }
    std::vector<int32_t> tokens;
    // Roughly four bytes per token in English; widen the slice until it holds enough.
    for (size_t bytes = static_cast<size_t>(length) * 8;; bytes *= 2) {
      tokens = tokenizer.Encode(std::string_view(text).substr(start, bytes));
      if (static_cast<int64_t>(tokens.size()) > length || start + bytes >= text.size()) break;
    }
    Require(static_cast<int64_t>(tokens.size()) >= length,
            "{}: only {} tokens after byte {}, a calibration sample needs {} (use a longer text or a shorter "
            "--seqlen)",
            text_file, tokens.size(), start, length);
    for (int64_t t = 0; t < length; ++t) rows[sample][t] = tokens[t];
  }
  return ids;
}

}  // namespace atq
