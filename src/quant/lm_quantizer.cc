// Block-by-block post-training quantization of causal language models.
#include "quant/lm_quantizer.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <numeric>
#include <unordered_map>

#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "models/lm_linear.h"
#include "quant/calibration.h"
#include "quant/mixed_precision.h"
#include "grid/quantized_weight.h"
#include "quant/ternary_calibration.h"
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

struct Layer {
  std::string name;  // module name
  LmLinearImpl* linear = nullptr;
  LayerRecipe recipe;
};

// The block's linear layers with their full module names, in registration (= forward) order.
std::vector<Layer> BlockLayers(CausalLmImpl& model, size_t block,
                               const std::unordered_map<const torch::nn::Module*, std::string>& names) {
  std::vector<Layer> layers;
  for (const auto& module : model.Block(block)->modules(/*include_self=*/false)) {
    if (auto* linear = module->as<LmLinearImpl>()) layers.push_back({names.at(module.get()), linear, {}});
  }
  return layers;
}

std::unordered_map<const torch::nn::Module*, std::string> ModuleNames(CausalLmImpl& model) {
  std::unordered_map<const torch::nn::Module*, std::string> names;
  for (const auto& item : model.named_modules()) names.emplace(item.value().get(), item.key());
  return names;
}

// Collects the Hessians of `layers` while the block runs over the calibration batches. Layers fed the same
// tensor (Llama's q/k/v, gate/up) share one accumulator. Returns the first-called group of layers (indices),
// which true-sequential quantization takes as the next stage.
struct HessianCapture {
  std::vector<std::shared_ptr<HessianAccumulator>> accumulators;  // per layer
  std::vector<size_t> first_stage;
};

HessianCapture CaptureHessians(CausalLmImpl& model, size_t block, const std::vector<Layer*>& layers,
                               const std::vector<torch::Tensor>& hidden) {
  HessianCapture capture;
  capture.accumulators.resize(layers.size());
  // This batch's inputs, kept alive so that no later input can reuse their memory and pass for one of them.
  std::vector<std::pair<torch::Tensor, std::shared_ptr<HessianAccumulator>>> seen;
  std::vector<HessianAccumulator*> call_order;
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i]->linear->tap = [&, i](const torch::Tensor& x) {
      for (const auto& [input, accumulator] : seen) {
        if (input.data_ptr() == x.data_ptr() && input.sizes() == x.sizes() && input.strides() == x.strides()) {
          capture.accumulators[i] = accumulator;  // a layer fed the same tensor accumulated it already
          return;
        }
      }
      if (!capture.accumulators[i]) {
        capture.accumulators[i] = std::make_shared<HessianAccumulator>(x.size(-1), x.device());
        call_order.push_back(capture.accumulators[i].get());
      }
      capture.accumulators[i]->Add(x);
      seen.emplace_back(x, capture.accumulators[i]);
    };
  }
  for (const torch::Tensor& batch : hidden) {
    seen.clear();
    model.ForwardBlock(block, batch);
  }
  for (Layer* layer : layers) layer->linear->tap = nullptr;
  for (size_t i = 0; i < layers.size(); ++i) {
    Require(capture.accumulators[i] != nullptr, "layer {} was never called while its block ran", layers[i]->name);
    if (!call_order.empty() && capture.accumulators[i].get() == call_order.front()) capture.first_stage.push_back(i);
  }
  return capture;
}

void CheckRecipe(const LayerRecipe& recipe, bool calibrated, const std::string& where) {
  if (recipe.keep) return;
  ValidateGrid(recipe.grid);
  Require(recipe.method != QuantMethod::kAtq || recipe.grid.kind == GridKind::kTernary,
          "{}: atq is ternary quantization; use rtn or gptq for {}", where, DescribeGrid(recipe.grid));
  Require(recipe.method != QuantMethod::kGptq || calibrated,
          "{}: gptq needs calibration data (samples > 0 and a text)", where);
}

LayerReport QuantizeLayer(const Layer& layer, const torch::Tensor& hessian, const LmQuantizeOptions& options,
                          LmQuantizeResult& result) {
  const auto start = Clock::now();
  const LayerRecipe& recipe = layer.recipe;
  const torch::Tensor weight = layer.linear->weight.detach().to(torch::kFloat32);
  LayerReport report;
  report.name = layer.name + ".weight";
  report.rows = weight.size(0);
  report.cols = weight.size(1);
  report.method = std::string(MethodName(recipe.method));
  report.grid = DescribeGrid(recipe.grid);
  WeightQuantization quantization = QuantizeWeight(weight, hessian, recipe, options, layer.name);
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

// Chooses each layer's grid by sensitivity (writes them into options.layers) and returns the plan.
nlohmann::json PlanMixedPrecision(CausalLmImpl& model, const Tokenizer& tokenizer, LmQuantizeOptions& options) {
  Require(options.samples > 0, "mixed precision measures sensitivity on calibration data (nsamples > 0)");
  Require((options.mixed_budget > 0) != (options.mixed_keep_top > 0),
          "mixed precision needs exactly one of mixed_budget (average bits) and mixed_keep_top (k layers)");
  Require(options.sensitivity == "fisher" || options.sensitivity == "output",
          "sensitivity must be fisher or output, not '{}'", options.sensitivity);
  const std::vector<WeightGrid> candidates = ParseCandidateGrids(options.mixed_candidates, options.recipe.grid);
  const auto measure = [&]() {
    return MeasureSensitivity(model, tokenizer, options, candidates,
                              options.sensitivity == "fisher" ? SensitivityScore::kFisher : SensitivityScore::kOutput);
  };
  std::vector<LayerSensitivity> sensitivity;
  if (options.sensitivity_cache == nullptr) {
    sensitivity = measure();
  } else {
    const std::string key = SensitivityKey(options);
    auto cached = options.sensitivity_cache->entries.find(key);
    if (cached == options.sensitivity_cache->entries.end()) {
      cached = options.sensitivity_cache->entries.emplace(key, measure()).first;
    } else {
      LogInfo("mixed precision: reusing the sensitivities measured under the same settings");
    }
    sensitivity = cached->second;
  }
  const std::vector<size_t> choice =
      options.mixed_budget > 0 ? AllocateBits(sensitivity, options.mixed_budget)
                               : KeepMostSensitive(sensitivity, 0, candidates.size() - 1, options.mixed_keep_top);
  for (size_t l = 0; l < sensitivity.size(); ++l) {
    if (options.layers.count(sensitivity[l].name) > 0) continue;  // the recipe's own overrides win
    LayerRecipe recipe = options.recipe;
    recipe.grid = candidates[choice[l]];
    if (recipe.method == QuantMethod::kAtq && recipe.grid.kind != GridKind::kTernary) recipe.method = QuantMethod::kGptq;
    options.layers[sensitivity[l].name] = recipe;
    LogInfo("mixed precision: {:<40} {}", sensitivity[l].name, DescribeGrid(recipe.grid));
  }
  nlohmann::json plan = MixedPlanJson(sensitivity, candidates, choice);
  plan["score"] = options.sensitivity;
  if (options.mixed_budget > 0) plan["budget_bits"] = options.mixed_budget;
  if (options.mixed_keep_top > 0) plan["keep_top"] = options.mixed_keep_top;
  LogInfo("mixed precision: {:.3f} bits per weight on average", plan["bits_per_weight"].get<double>());
  return plan;
}

}  // namespace

std::string_view MethodName(QuantMethod method) {
  switch (method) {
    case QuantMethod::kRtn: return "rtn";
    case QuantMethod::kAtq: return "atq";
    case QuantMethod::kGptq: return "gptq";
  }
  return "?";
}

std::optional<QuantMethod> ParseMethod(std::string_view name) {
  if (name == "rtn") return QuantMethod::kRtn;
  if (name == "atq") return QuantMethod::kAtq;
  if (name == "gptq") return QuantMethod::kGptq;
  return std::nullopt;
}

WeightQuantization QuantizeWeight(const torch::Tensor& weight, const torch::Tensor& hessian, const LayerRecipe& recipe,
                                 const LmQuantizeOptions& options, const std::string& name) {
  WeightQuantization out;
  if (recipe.method == QuantMethod::kGptq) {
    Require(hessian.defined(), "{}: gptq needs calibration data", name);
    GptqResult gptq = Gptq(weight, hessian, recipe.grid, options.gptq);
    if (gptq.damp_raises > 0) {
      LogWarn("{}: Cholesky of the Hessian failed; dampening raised {} times to {} of its mean diagonal", name,
              gptq.damp_raises, gptq.damp);
    }
    out.damp = gptq.damp;
    out.weight = std::move(gptq.weight);
  } else if (recipe.method == QuantMethod::kAtq && options.atq_calibrate && hessian.defined()) {
    CalibratedTernary calibrated = CalibrateTernary(
        weight, hessian, recipe.grid, options.atq_ratios.empty() ? DefaultTernaryRatios() : options.atq_ratios);
    out.threshold_ratio = calibrated.ratios.mean().item<double>();
    out.weight = std::move(calibrated.weight);
  } else {
    out.weight = QuantizeRtn(weight, recipe.grid);
  }
  return out;
}

int64_t ForEachCalibratedBlock(CausalLmImpl& model, const Tokenizer& tokenizer, const LmQuantizeOptions& options,
                               const std::function<void(int64_t block, std::vector<CalibratedLayer>& layers)>& visit) {
  torch::NoGradGuard no_grad;
  Require(options.samples > 0 && !options.text.empty(), "calibration needs samples > 0 and a text file");
  const auto names = ModuleNames(model);
  const torch::Tensor ids = SampleCalibration(tokenizer, options.text, options.samples, options.length, options.seed);
  const torch::Device device = model.parameters().front().device();
  std::vector<torch::Tensor> hidden;
  for (const torch::Tensor& batch : ids.split(std::max<int64_t>(1, options.batch_size))) {
    hidden.push_back(model.Embed(batch.to(device)));
  }
  for (int64_t block = 0; block < model.config().num_layers; ++block) {
    std::vector<Layer> layers = BlockLayers(model, static_cast<size_t>(block), names);
    std::vector<Layer*> pointers;
    for (Layer& layer : layers) pointers.push_back(&layer);
    const HessianCapture capture = CaptureHessians(model, static_cast<size_t>(block), pointers, hidden);
    std::vector<CalibratedLayer> calibrated;
    for (size_t i = 0; i < layers.size(); ++i) {
      calibrated.push_back({layers[i].name, layers[i].linear, capture.accumulators[i]->hessian()});
    }
    visit(block, calibrated);
    for (torch::Tensor& batch : hidden) batch = model.ForwardBlock(static_cast<size_t>(block), batch);
  }
  return ids.numel();
}

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

std::vector<std::string> QuantizableLayers(CausalLmImpl& model) {
  const auto names = ModuleNames(model);
  std::vector<std::string> out;
  for (int64_t block = 0; block < model.config().num_layers; ++block) {
    for (const Layer& layer : BlockLayers(model, static_cast<size_t>(block), names)) out.push_back(layer.name);
  }
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
  const auto names = ModuleNames(model);
  const std::vector<std::string> all_layers = QuantizableLayers(model);
  for (const auto& [name, recipe] : options.layers) {
    Require(std::find(all_layers.begin(), all_layers.end(), name) != all_layers.end(),
            "recipe: layer '{}' is not a linear layer of this model's blocks (e.g. '{}')", name, all_layers.front());
    CheckRecipe(recipe, calibrated, "recipe layer " + name);
  }

  LmQuantizeResult result;
  if (!options.mixed_candidates.empty()) result.mixed_plan = PlanMixedPrecision(model, tokenizer, options);
  std::vector<torch::Tensor> hidden;  // the calibration batches entering the current block: [B, T, C]
  const torch::Device device = model.parameters().front().device();
  if (calibrated) {
    const torch::Tensor ids = SampleCalibration(tokenizer, options.text, options.samples, options.length, options.seed);
    result.calibration_tokens = ids.numel();
    for (const torch::Tensor& batch : ids.split(std::max<int64_t>(1, options.batch_size))) {
      hidden.push_back(model.Embed(batch.to(device)));
    }
  }
  Progress progress("quantize", static_cast<int64_t>(all_layers.size()), "layers");
  double block_seconds = 0;
  for (int64_t block = 0; block < model.config().num_layers; ++block) {
    std::vector<Layer> layers = BlockLayers(model, static_cast<size_t>(block), names);
    std::vector<Layer*> remaining;
    for (Layer& layer : layers) {
      const auto it = options.layers.find(layer.name);
      layer.recipe = it != options.layers.end() ? it->second : options.recipe;
      if (!layer.recipe.keep) {
        remaining.push_back(&layer);
      } else {
        progress.Advance(1, layer.name + " kept");
      }
    }
    while (!remaining.empty()) {
      std::vector<size_t> stage(remaining.size());
      std::iota(stage.begin(), stage.end(), 0);
      HessianCapture capture;
      if (calibrated) {
        const auto capture_start = Clock::now();
        capture = CaptureHessians(model, static_cast<size_t>(block), remaining, hidden);
        block_seconds += SecondsSince(capture_start);
        if (options.true_sequential) stage = capture.first_stage;
      }
      for (const size_t index : stage) {
        const torch::Tensor hessian = calibrated ? capture.accumulators[index]->hessian() : torch::Tensor();
        result.layers.push_back(QuantizeLayer(*remaining[index], hessian, options, result));
        const LayerReport& report = result.layers.back();
        progress.Advance(1, fmt::format("{} {:.2f} bpw, output error {:.4f}", remaining[index]->name,
                                        report.bits_per_weight, report.output_error));
      }
      std::vector<Layer*> rest;
      for (size_t i = 0; i < remaining.size(); ++i) {
        if (std::find(stage.begin(), stage.end(), i) == stage.end()) rest.push_back(remaining[i]);
      }
      remaining = std::move(rest);
    }
    if (calibrated) {  // what the next block sees: this block's output with its weights quantized
      const auto forward_start = Clock::now();
      for (torch::Tensor& batch : hidden) batch = model.ForwardBlock(static_cast<size_t>(block), batch);
      block_seconds += SecondsSince(forward_start);
    }
  }
  progress.Finish();

  const std::string embedding = model.config().arch == LmArch::kGpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
  for (auto& parameter : model.named_parameters()) {
    if (options.embedding_type && parameter.key() == embedding) {
      QuantizeTable(parameter.value(), parameter.key(), *options.embedding_type, result);
    } else if (options.head_type && parameter.key() == "lm_head.weight") {
      QuantizeTable(parameter.value(), parameter.key(), *options.head_type, result);
    }
  }
  result.calibration_seconds = block_seconds;
  result.total_seconds = SecondsSince(start);
  return result;
}

}  // namespace atq
