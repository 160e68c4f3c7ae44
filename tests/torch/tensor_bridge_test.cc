// Stored tensors <-> torch tensors: exact for storage types, the reference dequantizer for quantized ones.
#include "torch/tensor_bridge.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "util/error.h"

namespace atq {
namespace {

TensorInfo InfoFor(QuantType type, std::vector<int64_t> shape, const Layout& layout_template = {}) {
  TensorInfo info;
  info.name = "t";
  info.type = type;
  info.shape = shape;
  info.layout = LayoutForShape(type, shape);
  info.layout.granularity = layout_template.granularity;
  info.layout.group_size = layout_template.group_size;
  info.nbytes = static_cast<uint64_t>(PackedBytes(info.layout));
  return info;
}

TEST(TensorBridge, StorageTypesRoundTripExactly) {
  torch::manual_seed(0);
  const torch::Tensor base = torch::randn({3, 5}) * 100;
  for (const auto dtype : {torch::kFloat32, torch::kFloat16, torch::kBFloat16, torch::kFloat64, torch::kInt8,
                           torch::kInt16, torch::kInt32, torch::kInt64, torch::kUInt8, torch::kBool}) {
    const torch::Tensor tensor = base.to(dtype);
    const QuantType type = StorageTypeOf(dtype);
    const std::vector<uint8_t> bytes = FromTorch(tensor, type);
    const torch::Tensor back = ToTorch(InfoFor(type, {3, 5}), bytes.data());
    EXPECT_EQ(back.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(back, tensor)) << c10::toString(dtype);
  }
}

TEST(TensorBridge, QuantizedTypesDequantizeToFloat) {
  torch::manual_seed(1);
  const torch::Tensor weight = torch::randn({4, 64});
  const std::vector<uint8_t> bytes = FromTorch(weight, QuantType::kQ8_0);
  const torch::Tensor back = ToTorch(InfoFor(QuantType::kQ8_0, {4, 64}), bytes.data());
  EXPECT_EQ(back.scalar_type(), torch::kFloat32);
  EXPECT_EQ(back.sizes(), weight.sizes());
  // Q8_0 rounds to 1/127 of each block's max |w|, so the error is below max|w| / 254 (+ f16 scale rounding).
  const float bound = weight.abs().max().item<float>() / 254.0f * 1.01f;
  EXPECT_LE((back - weight).abs().max().item<float>(), bound);
}

TEST(TensorBridge, AtqTypesUseTheLayoutTemplate) {
  torch::manual_seed(2);
  const torch::Tensor weight = torch::randn({6, 10});
  Layout per_channel;
  per_channel.granularity = Granularity::kChannel;
  const std::vector<uint8_t> bytes = FromTorch(weight, QuantType::kTernary2, per_channel);
  const torch::Tensor back = ToTorch(InfoFor(QuantType::kTernary2, {6, 10}, per_channel), bytes.data());
  // Every row is {-a, 0, +a} for its own scale a.
  for (int64_t row = 0; row < 6; ++row) {
    const torch::Tensor values = std::get<0>(torch::_unique(back[row].abs()));
    EXPECT_LE(values.numel(), 2);
  }
}

TEST(TensorBridge, SizeMismatchIsAnError) {
  TensorInfo info = InfoFor(QuantType::kF32, {2, 2});
  info.nbytes = 12;
  std::vector<uint8_t> bytes(16);
  EXPECT_THROW(ToTorch(info, bytes.data()), Error);
}

}  // namespace
}  // namespace atq
