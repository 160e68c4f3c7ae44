// Conversions between stored tensors and torch tensors.
#include "torch/tensor_bridge.h"

#include <cstring>

#include <torch/torch.h>

#include "util/error.h"

namespace atq {
namespace {

std::optional<torch::ScalarType> TorchDtypeOf(QuantType type) {
  switch (type) {
    case QuantType::kF32: return torch::kFloat32;
    case QuantType::kF16: return torch::kFloat16;
    case QuantType::kBF16: return torch::kBFloat16;
    case QuantType::kF64: return torch::kFloat64;
    case QuantType::kI8: return torch::kInt8;
    case QuantType::kI16: return torch::kInt16;
    case QuantType::kI32: return torch::kInt32;
    case QuantType::kI64: return torch::kInt64;
    case QuantType::kU8: return torch::kUInt8;
    case QuantType::kBool: return torch::kBool;
    default: return std::nullopt;
  }
}

}  // namespace

QuantType StorageTypeOf(torch::ScalarType dtype) {
  for (const TypeTraits& row : AllTypes()) {
    const auto torch_dtype = TorchDtypeOf(row.type);
    if (torch_dtype && *torch_dtype == dtype) return row.type;
  }
  Fail("torch dtype {} has no atq storage type", c10::toString(dtype));
}

torch::Tensor ToTorch(const TensorInfo& info, const uint8_t* data) {
  const int64_t expected = PackedBytes(info.layout);
  Require(static_cast<int64_t>(info.nbytes) == expected, "tensor '{}': {} bytes stored, {} {} needs {}", info.name,
          info.nbytes, TypeName(info.type), ShapeString(info.shape), expected);
  if (const auto dtype = TorchDtypeOf(info.type)) {
    torch::Tensor out = torch::empty(info.shape, torch::TensorOptions().dtype(*dtype));
    if (info.nbytes > 0) std::memcpy(out.data_ptr(), data, info.nbytes);
    return out;
  }
  torch::Tensor out = torch::empty(info.shape, torch::kFloat32);
  Dequantize(info.layout, data, out.data_ptr<float>());
  return out;
}

std::vector<uint8_t> FromTorch(const torch::Tensor& tensor, QuantType type, const Layout& layout_template) {
  const std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
  Layout layout = LayoutForShape(type, shape);
  layout.granularity = layout_template.granularity;
  layout.group_size = layout_template.group_size;
  std::vector<uint8_t> bytes(static_cast<size_t>(PackedBytes(layout)));
  if (const auto dtype = TorchDtypeOf(type)) {
    const torch::Tensor source = tensor.to(torch::kCPU).to(*dtype).contiguous();
    if (!bytes.empty()) std::memcpy(bytes.data(), source.data_ptr(), bytes.size());
    return bytes;
  }
  const torch::Tensor source = tensor.to(torch::kCPU).to(torch::kFloat32).contiguous();
  Quantize(layout, source.data_ptr<float>(), bytes.data());
  return bytes;
}

void RequireFloatStorage(const TensorInfo& info, const std::string& what) {
  Require(FindTraits(static_cast<uint32_t>(info.type)) != nullptr, "{}: tensor '{}' has tensor type id {}, which atq "
          "cannot read", what, info.name, static_cast<uint32_t>(info.type));
  const TypeTraits& traits = Traits(info.type);
  Require(traits.family != TypeFamily::kInteger, "{}: tensor '{}' is stored as {}, not a float or quantized type",
          what, info.name, traits.name);
}

void RequireFinite(const torch::Tensor& tensor, const std::string& name, const std::string& what) {
  if (!tensor.is_floating_point() || tensor.numel() == 0) return;
  const torch::Tensor bad = torch::logical_not(torch::isfinite(tensor.reshape(-1)));
  if (!bad.any().item<bool>()) return;
  const int64_t count = bad.sum().item<int64_t>();
  const int64_t first = bad.nonzero().index({0, 0}).item<int64_t>();
  const double value = tensor.reshape(-1)[first].item<double>();
  Fail("{}: tensor '{}' holds {} non-finite value{} ({} at flat index {}); refusing to run it (language-model "
       "commands take --allow-nonfinite to run it anyway)",
       what, name, count, count == 1 ? "" : "s", value, first);
}

}  // namespace atq
