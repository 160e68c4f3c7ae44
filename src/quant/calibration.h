// Calibration data for post-training quantization: N windows of L tokens from a text file, seeded, so a run
// can be repeated exactly.
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "io/tokenizer.h"

namespace atq {

// Each sample starts at the beginning of a line chosen uniformly at random (std::mt19937_64 seeded with
// `seed`) and holds the first `length` tokens of the text from there; only the text each sample needs is
// tokenized, so a 25 MB training split costs milliseconds. Returns int64 [samples, length]. Throws atq::Error
// naming the file when it cannot be read or holds fewer than `length` tokens after a chosen start.
torch::Tensor SampleCalibration(const Tokenizer& tokenizer, const std::string& text_file, int64_t samples,
                                int64_t length, uint64_t seed);

}  // namespace atq
