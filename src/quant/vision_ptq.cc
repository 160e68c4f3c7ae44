// QuantizeClassifier: BatchNorm folding, weight quantization, activation calibration, and the per-layer report.
#include "quant/vision_ptq.h"

#include <torch/torch.h>

#include <chrono>
#include <limits>
#include <set>

#include "models/quant_layers.h"
#include "quant/batchnorm_fold.h"
#include "quant/ranking_attention.h"
#include "grid/fake_quant.h"
#include "grid/quantized_weight.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/strings.h"

namespace atq {
namespace {

constexpr int64_t kFloat32Bytes = 4;
constexpr int64_t kRankingBatches = 1;

void CheckBits(const LayerBitWidths& bits, const std::string& what) {
  Require(ValidBitWidths(bits), "{}: weight bits must be 2..8 or {} (float) or ternary, activation bits 2..16 or {}; "
          "not {} and {}", what, kFloatBits, kFloatBits, bits.weights, bits.activations);
}

}  // namespace

bool ValidBitWidths(const LayerBitWidths& bits) {
  return (bits.ternary || (bits.weights >= 2 && bits.weights <= 8) || bits.weights == kFloatBits) &&
         ((bits.activations >= 2 && bits.activations <= 16) || bits.activations == kFloatBits);
}

WeightGrid VisionWeightGrid(const LayerBitWidths& bits, const VisionPtqOptions& options) {
  Require(bits.ternary || (bits.weights >= 2 && bits.weights <= 8), "no grid for {}-bit float weights", bits.weights);
  WeightGrid grid;
  grid.granularity = options.per_channel ? Granularity::kChannel : Granularity::kTensor;
  if (bits.ternary) {
    grid.kind = GridKind::kTernary;
    grid.threshold_rule = ThresholdRule::kRatio;
    grid.threshold_value = options.ternary_ratio;
  } else {
    grid.kind = GridKind::kUniform;
    grid.bits = bits.weights;
    grid.clip = options.weight_clip;
  }
  return grid;
}

int64_t PackedLayerBytes(const torch::Tensor& weight, const torch::Tensor& bias, const LayerBitWidths& bits,
                         const VisionPtqOptions& options) {
  const int64_t bias_bytes = bias.defined() ? bias.numel() * kFloat32Bytes : 0;
  if (!bits.ternary && bits.weights == kFloatBits) return weight.numel() * kFloat32Bytes + bias_bytes;
  const int64_t rows = weight.size(0), cols = weight.numel() / rows;
  return PackedBytes(GridLayout(VisionWeightGrid(bits, options), rows, cols)) + bias_bytes;
}

double QuantizeLayerWeight(QuantWeightLayer& layer, const LayerBitWidths& bits, const VisionPtqOptions& options) {
  if (!bits.ternary && bits.weights == kFloatBits) return 0;
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = layer.weight.detach().to(torch::kFloat32);
  const QuantizedWeight q = QuantizeRtn(weight.reshape({weight.size(0), -1}), VisionWeightGrid(bits, options));
  layer.weight.copy_(q.values.view(weight.sizes()).to(layer.weight.dtype()));
  return RelativeOutputError(weight.reshape({weight.size(0), -1}), q.values, {});
}

VisionLayerReport QuantizeWeightLayer(const std::string& name, QuantWeightLayer& layer, const LayerBitWidths& bits,
                                      const VisionPtqOptions& options) {
  VisionLayerReport row;
  row.name = name;
  row.weights = layer.weight.numel();
  row.bits = bits;
  row.weight_error = QuantizeLayerWeight(layer, bits, options);
  row.packed_bytes = PackedLayerBytes(layer.weight, layer.bias, bits, options);
  return row;
}

namespace {

// Every ActivationQuantizer that is not a weight layer's input (attention's queries and keys), by path.
std::vector<std::pair<std::string, ActivationQuantizerImpl*>> OtherQuantizers(ClassifierModule& model) {
  std::vector<std::pair<std::string, ActivationQuantizerImpl*>> found;
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto* quantizer = item.value()->as<ActivationQuantizerImpl>();
    if (quantizer != nullptr && !EndsWith(item.key(), ".input_quant")) found.emplace_back(item.key(), quantizer);
  }
  return found;
}

}  // namespace

int64_t VisionPtqReport::packed_bytes() const {
  int64_t total = 0;
  for (const VisionLayerReport& layer : layers) total += layer.packed_bytes;
  return total;
}

nlohmann::json VisionPtqReport::ToJson() const {
  nlohmann::json rows = nlohmann::json::array();
  int64_t weights = 0;
  for (const VisionLayerReport& layer : layers) {
    weights += layer.weights;
    rows.push_back(
        {{"layer", layer.name},
         {"weights", layer.weights},
         {"weight_bits", layer.bits.ternary ? nlohmann::json("ternary") : nlohmann::json(layer.bits.weights)},
         {"activation_bits", layer.bits.activations},
         {"weight_error", layer.weight_error},
         {"trained", layer.trained},
         {"activation_scale", layer.activation_scale},
         {"activation_unsigned", layer.activation_unsigned},
         {"activation_zero_point", layer.activation_zero_point},
         {"packed_bytes", layer.packed_bytes}});
  }
  return {{"layers", rows},
          {"weights", weights},
          {"packed_bytes", packed_bytes()},
          {"folded_batchnorms", folded_batchnorms},
          {"calibration_images", calibration_images},
          {"seconds", seconds}};
}

LayerBitWidths BitsForLayer(const VisionPtqOptions& options, const std::string& name) {
  const auto found = options.layers.find(name);
  return found == options.layers.end() ? options.bits : found->second;
}

VisionPtqReport QuantizeClassifier(ClassifierModule& model, const torch::Tensor& calibration,
                                   const VisionPtqOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const auto layers = model.QuantLayers();
  std::set<std::string> names;
  for (const auto& [name, layer] : layers) names.insert(name);
  CheckBits(options.bits, "ptq");
  for (const auto& [name, bits] : options.layers) {
    Require(names.count(name) > 0, "ptq: a per-layer setting names '{}', which is not a weight layer", name);
    CheckBits(bits, name);
  }
  model.eval();
  torch::NoGradGuard no_grad;
  VisionPtqReport report;
  // Layers trained quantized keep their trained values, written into the float weight so that BatchNorm folds
  // into them exactly (a per-channel factor leaves ternary or b-bit codes as they are).
  std::vector<QuantWeightLayer*> weight_layers;
  std::map<std::string, LayerBitWidths> trained;
  std::map<std::string, int64_t> boosted;
  for (const auto& [name, interface] : layers) {
    auto* layer = dynamic_cast<QuantWeightLayer*>(interface);
    Require(layer != nullptr, "ptq: layer '{}' is not a QuantWeightLayer", name);
    weight_layers.push_back(layer);
    LayerQuantConfig config = layer->quant_config();
    if (!config.quantized) continue;
    const bool ternary = config.mode() == WeightMode::kTernary;
    trained[name] = {ternary ? 2 : config.grid.bits, BitsForLayer(options, name).activations, ternary};
    boosted[name] = layer->Stats(name).rpb_weights;  // residual precision boosting's exact weights stay
    layer->weight.copy_(layer->EffectiveWeight());
    config.quantized = false;
    layer->SetQuantConfig(config);
  }
  if (!trained.empty()) LogInfo("ptq: {} layers keep the weights they were trained quantized to", trained.size());
  if (options.fold_batchnorm) report.folded_batchnorms = FoldBatchNorms(model);

  // Weights first, so the activations are calibrated on what the quantized layers really produce.
  for (size_t i = 0; i < layers.size(); ++i) {
    QuantWeightLayer& layer = *weight_layers[i];
    const std::string& name = layers[i].first;
    const auto kept = trained.find(name);
    if (kept == trained.end()) {
      report.layers.push_back(QuantizeWeightLayer(name, layer, BitsForLayer(options, name), options));
      continue;
    }
    VisionLayerReport row;
    row.name = name;
    row.weights = layer.weight.numel();
    row.trained = true;
    row.bits = kept->second;
    // A trained layer's scales are per channel once BatchNorm is folded into it.
    VisionPtqOptions sizing = options;
    sizing.per_channel = layer.quant_config().grid.granularity != Granularity::kTensor || report.folded_batchnorms > 0;
    row.packed_bytes = PackedLayerBytes(layer.weight, layer.bias, row.bits, sizing) + boosted[name] * kRpbBytesPerWeight;
    report.layers.push_back(row);
  }

  // Activations: observe every quantizer that will quantize, then set its grid.
  const auto others = OtherQuantizers(model);
  const bool any_activation = std::any_of(report.layers.begin(), report.layers.end(), [](const VisionLayerReport& r) {
    return r.bits.activations != kFloatBits;
  }) || (!others.empty() && options.bits.activations != kFloatBits);
  if (any_activation) {
    Require(calibration.defined() && calibration.size(0) > 0, "ptq: activation quantization needs calibration images");
    for (size_t i = 0; i < weight_layers.size(); ++i) {
      if (report.layers[i].bits.activations != kFloatBits) weight_layers[i]->input_quant->Observe();
    }
    if (options.bits.activations != kFloatBits) {
      for (const auto& [name, quantizer] : others) quantizer->Observe(1 << 18, options.ranking_aware ? kRankingBatches : 0);
    }
    Progress progress("calibrate activations", calibration.size(0), "images");
    for (int64_t begin = 0; begin < calibration.size(0); begin += options.batch_size) {
      const torch::Tensor batch = calibration.slice(0, begin, begin + options.batch_size);
      model.forward(batch);
      progress.Advance(batch.size(0));
    }
    progress.Finish();
    for (size_t i = 0; i < weight_layers.size(); ++i) {
      VisionLayerReport& row = report.layers[i];
      if (row.bits.activations == kFloatBits) continue;
      ActivationQuantizerImpl& quantizer = *weight_layers[i]->input_quant;
      quantizer.Calibrate(row.bits.activations, options.activation_range, options.percentile,
                          options.affine_activations);
      row.activation_scale = quantizer.scale();
      row.activation_unsigned = quantizer.unsigned_grid();
      row.activation_zero_point = quantizer.zero_point();
    }
    if (options.bits.activations != kFloatBits) {
      std::map<std::string, ActivationQuantizerImpl*> by_name(others.begin(), others.end());
      for (const auto& [name, quantizer] : others) {
        const std::string parent = name.substr(0, name.rfind('.') + 1);
        const auto key = by_name.find(parent + "key_quant");
        if (options.ranking_aware && EndsWith(name, ".query_quant") && key != by_name.end()) {
          CalibrateAttentionRanking(*quantizer, *key->second, options.bits.activations, options.ranking_weight);
        } else if (!(options.ranking_aware && EndsWith(name, ".key_quant") && by_name.count(parent + "query_quant"))) {
          quantizer->Calibrate(options.bits.activations, options.activation_range, options.percentile,
                               options.affine_activations);
        }
      }
    }
  }
  report.calibration_images = any_activation ? calibration.size(0) : 0;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace atq
