// Block-by-block post-training quantization of causal language models.
#include "quant/lm_quantizer.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <numeric>
#include <unordered_map>

#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "grid/quantized_weight.h"
#include "models/lm_linear.h"
#include "quant/lm_calibration.h"
#include "quant/method.h"
#include "quant/mixed_precision.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"

namespace atq {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void CheckRecipe(const LayerRecipe& recipe, bool calibrated, const std::string& where) {
  if (recipe.keep) return;
  ValidateGrid(recipe.grid);
  ValidateMethod(recipe.method, recipe.grid, calibrated, where);
}

LayerReport QuantizeLayer(const CalibratedLayer& layer, const LayerRecipe& recipe, const LmQuantizeOptions& options,
                          LmQuantizeResult& result) {
  const auto start = Clock::now();
  const torch::Tensor weight = layer.linear->weight.detach().to(torch::kFloat32);
  const torch::Tensor& hessian = layer.hessian;
  LayerReport report;
  report.name = layer.name + ".weight";
  report.rows = weight.size(0);
  report.cols = weight.size(1);
  report.method = recipe.method;
  report.grid = DescribeGrid(recipe.grid);
  MethodResult quantization = FindQuantMethod(recipe.method).quantize({weight, hessian, recipe.grid, options, layer.name});
  QuantizedWeight& q = quantization.weight;
  report.threshold_ratio = quantization.threshold_ratio;
  report.damp = quantization.damp;
  if (recipe.grid.kind == GridKind::kTernary && report.threshold_ratio < 0 &&
      recipe.grid.threshold_rule == ThresholdRule::kRatio) {
    report.threshold_ratio = recipe.grid.threshold_value;
  }
  report.type = std::string(TypeName(q.layout.type));
  report.packed_bytes = PackedBytes(q.layout);
  report.bits_per_weight = 8.0 * static_cast<double>(report.packed_bytes) / static_cast<double>(weight.numel());
  report.mean_scale = q.scales.mean().item<double>();
  report.sparsity = (q.values == 0).to(torch::kFloat64).mean().item<double>();
  report.weight_error = RelativeOutputError(weight, q.values, {});
  if (hessian.defined()) report.output_error = RelativeOutputError(weight, q.values, hessian);
  {
    torch::NoGradGuard no_grad;
    layer.linear->weight.copy_(q.values.to(layer.linear->weight.dtype()));
  }
  result.packed[report.name] = {q.layout, PackQuantized(q)};
  report.seconds = SecondsSince(start);
  return report;
}

// Rounds an embedding or head to a format of the table with its reference quantizer (per row for atq's own
// formats), in place.
void QuantizeTable(torch::Tensor& parameter, const std::string& name, QuantType type, LmQuantizeResult& result) {
  torch::NoGradGuard no_grad;
  Layout layout;
  layout.granularity = Granularity::kChannel;
  const torch::Tensor weight = parameter.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  std::vector<uint8_t> bytes = FromTorch(weight, type, layout);
  TensorInfo info;
  info.name = name;
  info.type = type;
  info.shape = weight.sizes().vec();
  info.layout = LayoutForShape(type, info.shape);
  if (Traits(type).family == TypeFamily::kTernary || Traits(type).family == TypeFamily::kUniform) {
    info.layout.granularity = Granularity::kChannel;
  }
  info.nbytes = bytes.size();
  parameter.copy_(ToTorch(info, bytes.data()).to(parameter.device(), parameter.scalar_type()));
  result.packed[name] = {info.layout, std::move(bytes)};
}

const LayerRecipe& RecipeFor(const LmQuantizeOptions& options, const std::string& layer) {
  const auto it = options.layers.find(layer);
  return it != options.layers.end() ? it->second : options.recipe;
}

}  // namespace

nlohmann::json LayerReport::ToJson() const {
  nlohmann::json out = {{"name", name},
                        {"rows", rows},
                        {"cols", cols},
                        {"method", method},
                        {"grid", grid},
                        {"type", type},
                        {"bits_per_weight", bits_per_weight},
                        {"packed_bytes", packed_bytes},
                        {"mean_scale", mean_scale},
                        {"sparsity", sparsity},
                        {"weight_error", weight_error},
                        {"seconds", seconds}};
  out["threshold_ratio"] = threshold_ratio >= 0 ? nlohmann::json(threshold_ratio) : nlohmann::json();
  out["output_error"] = output_error >= 0 ? nlohmann::json(output_error) : nlohmann::json();
  out["damp"] = damp >= 0 ? nlohmann::json(damp) : nlohmann::json();
  return out;
}

nlohmann::json LmQuantizeResult::ToJson() const {
  int64_t weights = 0, bytes = 0;
  nlohmann::json table = nlohmann::json::array();
  for (const LayerReport& layer : layers) {
    weights += layer.rows * layer.cols;
    bytes += layer.packed_bytes;
    table.push_back(layer.ToJson());
  }
  nlohmann::json out = {{"quantized_layers", layers.size()},
          {"quantized_weights", weights},
          {"quantized_bytes", bytes},
          {"bits_per_weight", weights > 0 ? 8.0 * static_cast<double>(bytes) / static_cast<double>(weights) : 0.0},
          {"calibration_tokens", calibration_tokens},
          {"calibration_seconds", calibration_seconds},
          {"total_seconds", total_seconds},
          {"layers", table}};
  if (!mixed_plan.is_null()) out["mixed_plan"] = mixed_plan;
  return out;
}

LmQuantizeResult QuantizeLanguageModel(CausalLmImpl& model, const Tokenizer& tokenizer,
                                       const LmQuantizeOptions& requested) {
  const auto start = Clock::now();
  LmQuantizeOptions options = requested;
  torch::NoGradGuard no_grad;
  model.eval();
  const bool calibrated = options.samples > 0;
  Require(!calibrated || !options.text.empty(), "calibration needs a text file (--calib)");
  CheckRecipe(options.recipe, calibrated, "recipe");
  const std::vector<std::string> all_layers = QuantizableLayers(model);
  for (const auto& [name, recipe] : options.layers) {
    Require(std::find(all_layers.begin(), all_layers.end(), name) != all_layers.end(),
            "recipe: layer '{}' is not a linear layer of this model's blocks (e.g. '{}')", name, all_layers.front());
    CheckRecipe(recipe, calibrated, "recipe layer " + name);
  }

  LmQuantizeResult result;
  if (!options.mixed_candidates.empty()) result.mixed_plan = PlanMixedPrecision(model, tokenizer, options);
  Progress progress("quantize", static_cast<int64_t>(all_layers.size()), "layers");
  const CalibrationRun run = CalibrateBlocks(
      model, tokenizer, options,
      [&](int64_t, std::vector<CalibratedLayer>& layers, const std::vector<size_t>& first_stage) {
        // Kept layers are done at once; the others in stages of layers fed the same input when true-sequential.
        std::vector<size_t> done;
        for (size_t i = 0; i < layers.size(); ++i) {
          if (RecipeFor(options, layers[i].name).keep) {
            done.push_back(i);
            progress.Advance(1, layers[i].name + " kept");
          }
        }
        const bool staged = options.true_sequential && calibrated;
        for (size_t i = 0; i < layers.size(); ++i) {
          const LayerRecipe& recipe = RecipeFor(options, layers[i].name);
          if (recipe.keep) continue;
          if (staged && std::find(first_stage.begin(), first_stage.end(), i) == first_stage.end()) continue;
          result.layers.push_back(QuantizeLayer(layers[i], recipe, options, result));
          const LayerReport& report = result.layers.back();
          progress.Advance(1, fmt::format("{} {:.2f} bpw, output error {:.4f}", layers[i].name,
                                          report.bits_per_weight, report.output_error));
          done.push_back(i);
        }
        return done;
      });
  progress.Finish();
  result.calibration_tokens = run.tokens;

  const std::string embedding = model.config().arch == LmArch::kGpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
  for (auto& parameter : model.named_parameters()) {
    if (options.embedding_type && parameter.key() == embedding) {
      QuantizeTable(parameter.value(), parameter.key(), *options.embedding_type, result);
    } else if (options.head_type && parameter.key() == "lm_head.weight") {
      QuantizeTable(parameter.value(), parameter.key(), *options.head_type, result);
    }
  }
  result.calibration_seconds = run.seconds;
  result.total_seconds = SecondsSince(start);
  return result;
}

}  // namespace atq
