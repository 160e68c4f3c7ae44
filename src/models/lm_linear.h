// The linear layer of atq's language models: y = x W^T + b with torch::nn::Linear's parameter names
// ("weight" [out, in], "bias" [out]), plus taps that see each input and output, so calibration can collect
// what every layer is fed (and the gradients its outputs get) without the model knowing about quantization.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "grid/fake_quant.h"
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
  // Quantization-aware training (train/lm_qat.h): when quantized, the product uses FakeQuantize(weight, quant),
  // exactly the values the packer stores, with the straight-through estimator's gradient to `weight`.
  LayerQuantConfig quant;
  // With learned scales (LearnedScales' 1-D layout), trained beside `weight` and held by the training loop rather
  // than registered, so the model's tensors stay those of its checkpoints; undefined: the grid's own fit.
  torch::Tensor learned_scale;
};
TORCH_MODULE(LmLinear);

// While one is alive on this thread, language models are built with placeholder weights in their linear layers
// and embeddings: the right shapes and no memory (one zero broadcast to the shape), to be filled a block at a
// time from a mapped file (models/lm_loader.h, LmWeightSource) or replaced by packed bytes. A 7B model's float32
// weights would not fit in memory to be overwritten.
class PlaceholderLmWeights {
 public:
  PlaceholderLmWeights();
  ~PlaceholderLmWeights();
  PlaceholderLmWeights(const PlaceholderLmWeights&) = delete;
  PlaceholderLmWeights& operator=(const PlaceholderLmWeights&) = delete;
  static bool active();

 private:
  bool previous_;
};

// A float32 tensor of `shape` that holds no memory (every element the same zero).
torch::Tensor PlaceholderWeight(const std::vector<int64_t>& shape);
// Whether `weight` is such a placeholder (or released: empty) rather than real values.
bool IsPlaceholderWeight(const torch::Tensor& weight);

// The embedding tables of the models: initialized normal(0, 0.02) as transformers does, or placeholders under
// PlaceholderLmWeights.
torch::nn::Embedding MakeLmEmbedding(int64_t count, int64_t width);

}  // namespace atq
