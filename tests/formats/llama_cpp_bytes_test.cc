// Our reference quantizers against bytes written by llama.cpp's llama-quantize: quantizing the stories260K f32
// tensors must reproduce every quantized tensor of the q8_0 / q4_0 / tq2_0 files exactly (Q8_0, Q4_0, and the
// Q5_0 llama.cpp fell back to in the tq2_0 file), and dequantizing them must give what the bytes say.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "formats/quant_type.h"
#include "io/gguf.h"
#include "test_util.h"

namespace atq {
namespace {

void ExpectSameBytesAsLlamaCpp(const std::string& quantized_name) {
  const auto f32_path = testutil::FixturePath("stories260K/stories260K-f32.gguf");
  const auto quantized_path = testutil::FixturePath("stories260K/" + quantized_name);
  if (!f32_path || !quantized_path) GTEST_SKIP() << "stories260K fixtures not found (set ATQ_FIXTURES)";
  const GgufFile reference = GgufFile::Open(*f32_path);
  const GgufFile quantized = GgufFile::Open(*quantized_path);
  int checked = 0;
  for (const TensorInfo& info : quantized.tensors()) {
    if (!Traits(info.type).is_quantized) continue;
    SCOPED_TRACE(info.name);
    const TensorInfo* source = reference.Find(info.name);
    ASSERT_NE(source, nullptr);
    ASSERT_EQ(source->type, QuantType::kF32);
    ASSERT_EQ(source->shape, info.shape);
    const Layout layout = LayoutForShape(info.type, info.shape);
    const std::vector<uint8_t> ours =
        Quantize(layout, reinterpret_cast<const float*>(reference.Data(*source)));
    ASSERT_EQ(ours.size(), info.nbytes);
    EXPECT_EQ(std::memcmp(ours.data(), quantized.Data(info), ours.size()), 0);
    ++checked;
  }
  EXPECT_GT(checked, 0) << "no quantized tensor in " << quantized_name;
}

TEST(LlamaCppBytes, Q8_0File) { ExpectSameBytesAsLlamaCpp("stories260K-q8_0.gguf"); }
TEST(LlamaCppBytes, Q4_0File) { ExpectSameBytesAsLlamaCpp("stories260K-q4_0.gguf"); }
TEST(LlamaCppBytes, MixedTq2_0File) { ExpectSameBytesAsLlamaCpp("stories260K-tq2_0.gguf"); }

// The Q5_0 embedding llama.cpp wrote, dequantized, is within the Q5_0 bound of the f32 original it came from: a
// full step |d| = max|w| / 16 of its block (plus f16 rounding), and on the grid (requantizes to the same bytes).
TEST(LlamaCppBytes, Q5_0EmbeddingDequantizesNearTheOriginal) {
  const auto f32_path = testutil::FixturePath("stories260K/stories260K-f32.gguf");
  const auto quantized_path = testutil::FixturePath("stories260K/stories260K-tq2_0.gguf");
  if (!f32_path || !quantized_path) GTEST_SKIP() << "stories260K fixtures not found (set ATQ_FIXTURES)";
  const GgufFile reference = GgufFile::Open(*f32_path);
  const GgufFile quantized = GgufFile::Open(*quantized_path);
  const TensorInfo& info = *quantized.Find("token_embd.weight");
  ASSERT_EQ(info.type, QuantType::kQ5_0);
  const float* original = reinterpret_cast<const float*>(reference.Data(*reference.Find("token_embd.weight")));
  const Layout layout = LayoutForShape(info.type, info.shape);
  const std::vector<float> values = Dequantize(layout, quantized.Data(info), static_cast<int64_t>(info.nbytes));
  for (size_t block = 0; block < values.size() / 32; ++block) {
    float max_abs = 0;
    for (size_t j = 0; j < 32; ++j) max_abs = std::max(max_abs, std::fabs(original[block * 32 + j]));
    for (size_t j = 0; j < 32; ++j) {
      ASSERT_LE(std::fabs(values[block * 32 + j] - original[block * 32 + j]), max_abs / 16 * (1 + 1.0f / 512))
          << "block " << block << " weight " << j;
    }
  }
  const std::vector<uint8_t> again = Quantize(layout, values.data());
  EXPECT_EQ(std::memcmp(again.data(), quantized.Data(info), again.size()), 0);
}

}  // namespace
}  // namespace atq
