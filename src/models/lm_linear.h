// The linear layer of atq's language models: y = x W^T + b with torch::nn::Linear's parameter names
// ("weight" [out, in], "bias" [out]), plus taps that see each input and output, so calibration can collect
// what every layer is fed (and the gradients its outputs get) without the model knowing about quantization.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "kernels/packed_matrix.h"

namespace atq {

struct LmLinearImpl : torch::nn::Module {
  LmLinearImpl(int64_t in_features, int64_t out_features, bool bias);
  torch::Tensor forward(const torch::Tensor& x);  // x: [..., in] -> [..., out]

  torch::Tensor weight, bias;  // bias undefined without one
  // Called with every input before the product (calibration); empty otherwise.
  std::function<void(const torch::Tensor&)> tap;
  // Called with every output after the product (sensitivity: registers gradient hooks); empty otherwise.
  std::function<void(const torch::Tensor&)> output_tap;
  // Set by the packed runtime (runtime/packed_runtime.h): the product runs on these packed weights through atq's
  // kernels, and `weight` is left empty.
  std::shared_ptr<const PackedWeights> packed;
};
TORCH_MODULE(LmLinear);

}  // namespace atq
