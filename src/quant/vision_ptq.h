// Post-training quantization of image classifiers (ResNet, ViT, atq's CNNs): BatchNorm folded first; weights
// on the grids of grid/weight_grid.h, uniform symmetric b-bit per tensor or per output channel (the MSE clip) or
// ternary; activations to b-bit at every weight layer's input and at attention's queries and keys, with
// ranges calibrated on images (min-max, percentile, MSE, or ranking-aware for attention).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "grid/weight_grid.h"
#include "models/activation_quant.h"
#include "models/classifier.h"

namespace atq {

constexpr int kFloatBits = 32;  // a bit width meaning "left in float32"

// What one weight layer (and its input) gets. weights: 2..8 uniform, or kFloatBits; ternary overrides weights.
struct LayerBitWidths {
  int weights = 8;
  int activations = 8;
  bool ternary = false;
};

// Whether the widths are ones the quantizers take: weights 2..8 or kFloatBits (or ternary), activations 2..16
// or kFloatBits.
bool ValidBitWidths(const LayerBitWidths& bits);

struct VisionPtqOptions {
  LayerBitWidths bits;                           // every weight layer
  std::map<std::string, LayerBitWidths> layers;  // overrides by layer name ("layer1.0.conv1"), mixed precision
  bool per_channel = true;                       // weight scales per output channel (else one per layer)
  ClipRule weight_clip = ClipRule::kMse;         // uniform weights: the scale minimizing the squared error, or absmax
  double ternary_ratio = 0.7;                    // ternary threshold = ratio * mean |w| of the channel (TWN's 0.7)
  RangeMethod activation_range = RangeMethod::kMse;
  // Activations of both signs on an affine grid (unsigned codes and a zero point) instead of a symmetric one
  // (ActivationQuantizerImpl::Calibrate says when that pays).
  bool affine_activations = false;
  double percentile = 0.9999;  // kPercentile: the quantile of |x| that becomes the clip
  // Attention queries and keys (ViT) take the activation bits of the model-wide setting; ranking_aware picks
  // their two clips jointly to keep the order of the attention scores (quant/ranking_attention.h).
  bool ranking_aware = false;
  double ranking_weight = 1.0;  // the ranking loss's weight against the scores' relative squared error
  bool fold_batchnorm = true;
  int64_t batch_size = 128;  // calibration batches
};

struct VisionLayerReport {
  std::string name;
  int64_t weights = 0;
  LayerBitWidths bits;
  double weight_error = 0;        // ||W - Q||^2 / ||W||^2 (0 for a trained layer)
  bool trained = false;  // kept the quantization it was trained with (bits: that width; bytes include RPB weights)
  double activation_scale = 0;    // 0 when the input stays float
  bool activation_unsigned = false;
  int64_t activation_zero_point = 0;  // an affine grid's (unsigned codes)
  int64_t packed_bytes = 0;       // codes + one f32 scale per row (or layer) + f32 bias; float32 layers: 4/weight
};

struct VisionPtqReport {
  std::vector<VisionLayerReport> layers;
  int folded_batchnorms = 0;
  int64_t calibration_images = 0;
  double seconds = 0;
  int64_t packed_bytes() const;  // weight layers only
  nlohmann::json ToJson() const;
};

// The bit widths layer `name` gets under `options`.
LayerBitWidths BitsForLayer(const VisionPtqOptions& options, const std::string& name);

// Quantizes `model` in place for evaluation (eval mode): folds BatchNorm, replaces each weight by its quantized
// values (a layer trained quantized, e.g. by atq train --mode ternary, keeps its trained values and takes only
// the activation bits), then observes `calibration` ([N, C, H, W], normalized) to set every activation grid. Throws
// atq::Error for bad bit widths, an override naming no layer, or activation bits without calibration images.
VisionPtqReport QuantizeClassifier(ClassifierModule& model, const torch::Tensor& calibration,
                                   const VisionPtqOptions& options);

class QuantWeightLayer;

// The grid a weight layer gets at these widths (not float): ternary with threshold ternary_ratio * mean |w|, or
// uniform symmetric b-bit with the MSE clip (grid/weight_grid.h), per channel or per tensor as options say.
WeightGrid VisionWeightGrid(const LayerBitWidths& bits, const VisionPtqOptions& options);

// Replaces the layer's weight by its values on that grid (float widths: unchanged); returns ||W - Q||^2 / ||W||^2.
double QuantizeLayerWeight(QuantWeightLayer& layer, const LayerBitWidths& bits, const VisionPtqOptions& options);

// Quantizes one layer's weight at these widths and reports it (name, weights, error, packed bytes); the
// activation fields are the caller's to fill once it calibrates the input.
VisionLayerReport QuantizeWeightLayer(const std::string& name, QuantWeightLayer& layer, const LayerBitWidths& bits,
                                      const VisionPtqOptions& options);

// The packed bytes of a weight [out, ...] with optional bias at these widths: the format table's size of the grid's
// storage type (codes, scales), plus the f32 bias; float32 weights take 4 bytes each.
int64_t PackedLayerBytes(const torch::Tensor& weight, const torch::Tensor& bias, const LayerBitWidths& bits,
                         const VisionPtqOptions& options);

}  // namespace atq
