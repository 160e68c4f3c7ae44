// atq's packed tensors inside safetensors: a U8 byte string plus "atq.packed.<name>" metadata is presented by
// TensorFile with its real type, shape and layout; metadata that lies about the bytes is rejected by name.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "formats/quant_type.h"
#include "io/safetensors.h"
#include "io/tensor_file.h"
#include "test_util.h"

namespace atq {
namespace {

struct PackedFile {
  std::string path;
  std::vector<float> weights;
};

PackedFile WritePacked(const testutil::TempDir& dir, const std::string& description, int64_t extra_bytes = 0) {
  Layout layout;
  layout.type = QuantType::kUniform4Asym;
  layout.rows = 3;
  layout.cols = 40;
  layout.granularity = Granularity::kGroup;
  layout.group_size = 16;
  PackedFile file;
  for (int i = 0; i < 120; ++i) file.weights.push_back(static_cast<float>((i * 37) % 23) - 11.0f);
  std::vector<uint8_t> bytes = Quantize(layout, file.weights.data());
  bytes.resize(bytes.size() + static_cast<size_t>(extra_bytes));
  const std::vector<float> bias = {1, 2, 3};
  file.path = (std::filesystem::path(dir.path()) / "packed.safetensors").string();
  WriteSafetensors(file.path,
                   {{"layer.weight", QuantType::kU8, {static_cast<int64_t>(bytes.size())}, bytes.data(), bytes.size()},
                    {"layer.bias", QuantType::kF32, {3}, reinterpret_cast<const uint8_t*>(bias.data()), 12}},
                   {{"atq.packed.layer.weight", description}});
  return file;
}

TEST(PackedSafetensorsTest, PresentsTheRealTypeShapeAndLayout) {
  testutil::TempDir dir;
  const PackedFile written = WritePacked(dir, R"({"type": "u4a", "shape": [3, 40], "granularity": "group:16"})");
  const TensorFile file = TensorFile::Open(written.path);
  const TensorEntry* entry = file.Find("layer.weight");
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->info->type, QuantType::kUniform4Asym);
  EXPECT_EQ(entry->info->shape, std::vector<int64_t>({3, 40}));
  EXPECT_EQ(entry->info->layout.granularity, Granularity::kGroup);
  EXPECT_EQ(entry->info->layout.group_size, 16);
  Layout layout = entry->info->layout;
  std::vector<uint8_t> bytes = Quantize(layout, written.weights.data());
  EXPECT_EQ(ReadAsFloat(*entry), Dequantize(layout, bytes.data(), static_cast<int64_t>(bytes.size())));
  EXPECT_EQ(file.Find("layer.bias")->info->type, QuantType::kF32);
}

TEST(PackedSafetensorsTest, RejectsMetadataThatDoesNotFitTheBytes) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"type": "u4a", "shape": [3, 40], "granularity": "channel"})", "bytes"},
      {R"({"type": "u4a", "shape": [3, 41], "granularity": "group:16"})", "bytes"},
      {R"({"type": "f32", "shape": [3, 40], "granularity": "group:16"})", "quantized format"},
      {R"({"type": "u4a", "shape": [3, 40], "granularity": "rows"})", "granularity"},
      {R"({"type": "u4a", "shape": "3x40", "granularity": "group:16"})", "object"},
      {"not json", "not valid JSON"},
  };
  for (const auto& [description, needle] : cases) {
    testutil::TempDir dir;
    const PackedFile written = WritePacked(dir, description);
    testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { TensorFile::Open(written.path); }), written.path,
                                {"layer.weight", needle});
  }
  testutil::TempDir dir;
  const PackedFile padded = WritePacked(dir, R"({"type": "u4a", "shape": [3, 40], "granularity": "group:16"})", 1);
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { TensorFile::Open(padded.path); }), padded.path,
                              {"layer.weight", "bytes"});
}

}  // namespace
}  // namespace atq
