// Round-trip measurement: known answers for exact formats and for a hand-checked Q8_0 block.
#include "formats/roundtrip.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace atq {
namespace {

TEST(RoundtripMeasure, Float32IsExact) {
  const std::vector<float> weights = {1.0f, -2.0f, 0.5f, 3.0f};
  const RoundtripError error = MeasureRoundtrip({QuantType::kF32, 2, 2}, weights.data());
  EXPECT_EQ(error.weights, 4);
  EXPECT_EQ(error.packed_bytes, 16);
  EXPECT_DOUBLE_EQ(error.BitsPerWeight(), 32.0);
  EXPECT_EQ(error.sum_squared_error, 0.0);
  EXPECT_DOUBLE_EQ(error.sum_squared_weight, 1 + 4 + 0.25 + 9);
  EXPECT_EQ(error.RelativeRmse(), 0.0);
  EXPECT_TRUE(std::isinf(error.SqnrDb()));
}

TEST(RoundtripMeasure, Q8_0BlockOfSmallIntegers) {
  // Block of 32 values k - 16 for k = 0..31: max |w| = 16, d = 16/127, and each w/d = (k-16)*127/16 is
  // rounded, so the error per weight is at most d/2 and the packed block is 34 bytes (8.5 bits per weight).
  std::vector<float> weights(32);
  for (int k = 0; k < 32; ++k) weights[k] = static_cast<float>(k - 16);
  const RoundtripError error = MeasureRoundtrip({QuantType::kQ8_0, 1, 32}, weights.data());
  EXPECT_EQ(error.packed_bytes, 34);
  EXPECT_DOUBLE_EQ(error.BitsPerWeight(), 8.5);
  EXPECT_GT(error.max_abs_error, 0.0);
  EXPECT_LE(error.max_abs_error, 16.0 / 127.0 / 2.0 * 1.001);
  EXPECT_LT(error.RelativeRmse(), 0.01);
}

TEST(RoundtripMeasure, AddAccumulates) {
  RoundtripError a;
  a.weights = 10;
  a.packed_bytes = 5;
  a.sum_squared_error = 1;
  a.sum_squared_weight = 100;
  a.max_abs_error = 0.5;
  RoundtripError b = a;
  b.max_abs_error = 0.7;
  a.Add(b);
  EXPECT_EQ(a.weights, 20);
  EXPECT_EQ(a.packed_bytes, 10);
  EXPECT_DOUBLE_EQ(a.RelativeRmse(), 0.1);
  EXPECT_DOUBLE_EQ(a.SqnrDb(), 20.0);
  EXPECT_DOUBLE_EQ(a.max_abs_error, 0.7);
}

}  // namespace
}  // namespace atq
