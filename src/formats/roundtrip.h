// What a format costs on real weights: packed bytes and the error of quantize -> dequantize.
#pragma once

#include <cstdint>

#include "formats/quant_type.h"

namespace atq {

struct RoundtripError {
  int64_t weights = 0;
  int64_t packed_bytes = 0;
  double sum_squared_error = 0;   // sum (w - w')^2
  double sum_squared_weight = 0;  // sum w^2
  double max_abs_error = 0;
  double seconds = 0;             // quantize + dequantize

  double BitsPerWeight() const { return weights > 0 ? 8.0 * packed_bytes / weights : 0.0; }
  // ||w - w'|| / ||w||: 0 is exact, 1 is as bad as storing zeros.
  double RelativeRmse() const;
  // Signal-to-quantization-noise ratio in dB.
  double SqnrDb() const;
  // Accumulates another tensor's figures (max of maxima, sums of the rest).
  void Add(const RoundtripError& other);
};

// Quantizes `weights` (layout.rows x layout.cols floats) to layout.type with the reference quantizer,
// dequantizes, and measures. Throws atq::Error when the layout does not fit the type.
RoundtripError MeasureRoundtrip(const Layout& layout, const float* weights);

}  // namespace atq
