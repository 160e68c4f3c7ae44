// Float tensors times packed weights: the glue between libtorch models and atq's kernels (kernels/matmul.h).
// Inputs are CPU tensors of any float dtype; outputs are float32.
#pragma once

#include <torch/types.h>

#include "kernels/packed_matrix.h"

namespace atq {

// x [..., cols] times packed W^T [rows, cols] -> [..., rows], through MatMul, plus the RPB corrections of
// the weights it keeps exactly (PackedWeights::boosted_index).
torch::Tensor PackedProduct(const torch::Tensor& x, const PackedWeights& weights);

// Rows `ids` [...] of a packed [vocab, dim] table -> [..., dim] (an embedding lookup on packed weights).
torch::Tensor PackedRows(const torch::Tensor& ids, const PackedWeights& table);

// How a model with packed weights multiplies them.
enum class PackedRun {
  kKernels,      // through atq's kernels (MatMul): activations quantized to int8 on the fly
  kDequantized,  // dequantized to float32 at each forward pass: the fake-quantized model's arithmetic
};

// A layer's weight as packed codes plus a sparse correction: the weights held at higher precision (RPB) are
// stored beside the packed matrix, and `residual` adds (exact - packed) at their positions.
struct PackedLayerWeights {
  PackedWeights weights;  // [out, in * k * k] for a convolution
  torch::Tensor residual;  // sparse COO float32 [out, in * k * k], coalesced; undefined when no weight is boosted
  int64_t boosted() const { return residual.defined() ? residual._nnz() : 0; }
};

// x [..., cols] times (packed W + residual)^T, plus bias [rows] when defined -> [..., rows].
torch::Tensor PackedProduct(const torch::Tensor& x, const PackedLayerWeights& weights, const torch::Tensor& bias);

// The weight in float32, [rows, cols]: every row dequantized, the residual added.
torch::Tensor DequantizedWeight(const PackedLayerWeights& weights);

}  // namespace atq
