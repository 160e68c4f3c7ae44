// Our Q8_0 and Q4_0 reference quantizers against bytes written by llama.cpp's llama-quantize: quantizing the
// stories260K f32 tensors must reproduce every quantized tensor of the q8_0 / q4_0 / tq2_0 files exactly.
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
    if (info.type != QuantType::kQ8_0 && info.type != QuantType::kQ4_0) continue;
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
  EXPECT_GT(checked, 0) << "no q8_0/q4_0 tensor in " << quantized_name;
}

TEST(LlamaCppBytes, Q8_0File) { ExpectSameBytesAsLlamaCpp("stories260K-q8_0.gguf"); }
TEST(LlamaCppBytes, Q4_0File) { ExpectSameBytesAsLlamaCpp("stories260K-q4_0.gguf"); }
TEST(LlamaCppBytes, MixedTq2_0File) { ExpectSameBytesAsLlamaCpp("stories260K-tq2_0.gguf"); }

}  // namespace
}  // namespace atq
