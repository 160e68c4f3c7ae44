// Moves tensors between atq's files (typed bytes, any format of the table) and libtorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "formats/quant_type.h"
#include "io/tensor_info.h"

namespace atq {

// Copies a stored tensor into a new torch tensor of the given shape. Float and integer storage types keep
// their dtype (f16 -> Half, i64 -> Long, bool -> Bool, ...); quantized types are dequantized to float32.
torch::Tensor ToTorch(const TensorInfo& info, const uint8_t* data);

// The bytes of `tensor` stored as `type` (quantized with the reference quantizer for quantized types;
// `layout_template` supplies granularity and group size for atq's own types). Shapes follow LayoutForShape.
std::vector<uint8_t> FromTorch(const torch::Tensor& tensor, QuantType type, const Layout& layout_template = {});

// The storage type that keeps a torch tensor exactly (Float -> f32, Half -> f16, Long -> i64, ...).
QuantType StorageTypeOf(torch::ScalarType dtype);

// A stored tensor that becomes a float parameter (weights, biases, norms): float or quantized storage only. An
// integer or bool tensor where a weight belongs is a wrong or hostile file, not data to convert; throws
// atq::Error "WHAT: tensor 'NAME' is stored as I32, not a float type".
void RequireFloatStorage(const TensorInfo& info, const std::string& what);

// Throws atq::Error "WHAT: tensor 'NAME' holds a non-finite value (nan at index 17; ...)" when any element is NaN
// or infinite: a model with such weights scores "perplexity nan" or "accuracy 0%" instead of failing.
void RequireFinite(const torch::Tensor& tensor, const std::string& name, const std::string& what);

// Sets libtorch's intra-op threads (Debian's libtorch starts with one) and atq's kernel threads; 0 means every core.
void SetTorchThreads(int threads);

}  // namespace atq
