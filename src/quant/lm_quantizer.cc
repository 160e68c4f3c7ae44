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
#include "models/lm_gguf_writer.h"
#include "models/lm_linear.h"
#include "quant/lm_calibration.h"
#include "quant/method.h"
#include "quant/mixed_precision.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"
#include "util/log.h"
#include "util/memory.h"
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
  report.sparsity = static_cast<double>((q.values == 0).sum().item<int64_t>()) / static_cast<double>(q.values.numel());
  report.weight_error = RelativeOutputError(weight, q.values, {});
  if (hessian.defined()) report.output_error = RelativeOutputError(weight, q.values, hessian);
  {
    torch::NoGradGuard no_grad;
    layer.linear->weight.copy_(q.values.to(layer.linear->weight.dtype()));
  }
  result.packed[report.name] = {q.layout, PackQuantized(q), nullptr, 0};
  const Layout& packed = result.packed[report.name].layout;
  const Layout planned = GridLayout(recipe.grid, report.rows, report.cols);
  Require(packed.type == planned.type && packed.rows == planned.rows && packed.cols == planned.cols &&
              packed.granularity == planned.granularity && packed.group_size == planned.group_size,
          "{}: internal error: method {} packed a layout other than its grid's", report.name, recipe.method);
  report.seconds = SecondsSince(start);
  return report;
}

// An embedding's or head's layout in a format of the table: per row for atq's own formats.
Layout TableLayout(QuantType type, const std::vector<int64_t>& shape) {
  Layout layout = LayoutForShape(type, shape);
  if (Traits(type).family == TypeFamily::kTernary || Traits(type).family == TypeFamily::kUniform) {
    layout.granularity = Granularity::kChannel;
  }
  return layout;
}

// Rounds an embedding or head to a format of the table with its reference quantizer, in place.
void QuantizeTable(torch::Tensor& parameter, const std::string& name, QuantType type, LmQuantizeResult& result) {
  torch::NoGradGuard no_grad;
  const torch::Tensor weight = parameter.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  TensorInfo info;
  info.name = name;
  info.type = type;
  info.shape = weight.sizes().vec();
  info.layout = TableLayout(type, info.shape);
  std::vector<uint8_t> bytes = FromTorch(weight, type, info.layout);
  info.nbytes = bytes.size();
  parameter.copy_(ToTorch(info, bytes.data()).to(parameter.device(), parameter.scalar_type()));
  result.packed[name] = {info.layout, std::move(bytes), nullptr, 0};
}

const LayerRecipe& RecipeFor(const LmQuantizeOptions& options, const std::string& layer) {
  const auto it = options.layers.find(layer);
  return it != options.layers.end() ? it->second : options.recipe;
}

std::string EmbeddingName(const CausalLmImpl& model) {
  return model.config().arch == LmArch::kGpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
}

// The embedding and head formats the options name, by parameter.
std::map<std::string, QuantType> TableTypes(CausalLmImpl& model, const LmQuantizeOptions& options) {
  std::map<std::string, QuantType> types;
  const auto parameters = model.named_parameters();
  if (options.embedding_type) types[EmbeddingName(model)] = *options.embedding_type;
  if (options.head_type && parameters.contains("lm_head.weight")) types["lm_head.weight"] = *options.head_type;
  return types;
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

nlohmann::json ResolveMixedPrecision(CausalLmImpl& model, const Tokenizer& tokenizer, LmQuantizeOptions& options,
                                     const LmWeightSource* weights) {
  if (options.mixed_candidates.empty()) return nullptr;
  // The sensitivity scores run the whole model with gradients: a streamed model is read whole for them.
  const std::vector<std::vector<std::string>> groups = ParameterGroups(model);
  if (weights != nullptr) {
    for (const auto& group : groups) LoadLmParameters(model, *weights, group);
  }
  nlohmann::json plan = PlanMixedPrecision(model, tokenizer, options);
  options.mixed_candidates.clear();
  if (weights != nullptr) {
    for (const auto& group : groups) ReleaseLmParameters(model, group);
  }
  return plan;
}

std::map<std::string, Layout> PlannedLayouts(CausalLmImpl& model, const LmQuantizeOptions& options) {
  std::map<std::string, Layout> layouts;
  const auto parameters = model.named_parameters();
  for (const std::string& layer : QuantizableLayers(model)) {
    const LayerRecipe& recipe = RecipeFor(options, layer);
    if (recipe.keep) continue;
    const torch::Tensor& weight = parameters[layer + ".weight"];
    layouts.emplace(layer + ".weight", GridLayout(recipe.grid, weight.size(0), weight.size(1)));
  }
  for (const auto& [name, type] : TableTypes(model, options)) {
    layouts.emplace(name, TableLayout(type, parameters[name].sizes().vec()));
  }
  return layouts;
}

LmQuantizeResult QuantizeLanguageModel(CausalLmImpl& model, const Tokenizer& tokenizer,
                                       const LmQuantizeOptions& requested, const LmQuantizeStream* stream) {
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

  // Streamed: weights are read a group at a time and released once written (models/causal_lm.h ParameterGroups).
  const std::vector<std::vector<std::string>> groups = ParameterGroups(model);
  const std::vector<std::string>& outside = groups.back();  // embeddings, final norm, head
  const LmWeightSource* source = stream != nullptr ? stream->weights : nullptr;
  const auto load = [&](const std::vector<std::string>& names) {
    if (source != nullptr) LoadLmParameters(model, *source, names);
  };
  const auto release = [&](const std::vector<std::string>& names) {
    if (source != nullptr) ReleaseLmParameters(model, names);
  };
  LmQuantizeResult result;
  result.mixed_plan = ResolveMixedPrecision(model, tokenizer, options, source);
  if (calibrated) load(outside);  // the calibration text enters through the embeddings
  const auto parameters = model.named_parameters();
  int64_t total_weights = 0;
  for (const std::string& layer : all_layers) total_weights += parameters[layer + ".weight"].numel();
  Progress progress("quantize", total_weights, "weights");
  const auto flush = [&](const std::vector<std::string>& names) {
    if (stream == nullptr) return;
    stream->write(GroupData(model, names, &result.packed));
    for (const std::string& name : names) result.packed.erase(name);
    release(names);
  };
  // True-sequential: each block's layers in stages, a stage calibrated on the outputs of the stages before it.
  const bool staged = options.true_sequential && calibrated;
  BlockHooks hooks;
  hooks.before = [&](int64_t block) { load(groups[static_cast<size_t>(block)]); };
  hooks.after = [&](int64_t block) {
    flush(groups[static_cast<size_t>(block)]);
    progress.Advance(0, fmt::format("block {} of {} done, resident {:.2f} GB", block + 1, groups.size() - 1,
                                    static_cast<double>(AnonymousResidentBytes()) / 1e9));
  };
  const CalibrationRun run = CalibrateBlocks(
      model, tokenizer, options,
      [&](int64_t, std::vector<CalibratedLayer>& layers, const std::vector<size_t>& first_stage) {
        // Kept layers are done at once; the others in stages of layers fed the same input when true-sequential.
        std::vector<size_t> done;
        for (size_t i = 0; i < layers.size(); ++i) {
          if (RecipeFor(options, layers[i].name).keep) {
            done.push_back(i);
            progress.Advance(layers[i].linear->weight.numel(), layers[i].name + " kept");
          }
        }
        for (size_t i = 0; i < layers.size(); ++i) {
          const LayerRecipe& recipe = RecipeFor(options, layers[i].name);
          if (recipe.keep) continue;
          if (staged && std::find(first_stage.begin(), first_stage.end(), i) == first_stage.end()) continue;
          result.layers.push_back(QuantizeLayer(layers[i], recipe, options, result));
          const LayerReport& report = result.layers.back();
          progress.Advance(report.rows * report.cols,
                           fmt::format("{} {:.2f} bpw, output error {:.4f}, resident {:.2f} GB", layers[i].name,
                                       report.bits_per_weight, report.output_error,
                                       static_cast<double>(AnonymousResidentBytes()) / 1e9));
          done.push_back(i);
        }
        return done;
      },
      &hooks, staged ? CaptureScope::kFirstStage : CaptureScope::kAllLayers);
  progress.Finish();
  result.calibration_tokens = run.tokens;

  if (!calibrated) load(outside);
  for (const auto& [name, type] : TableTypes(model, options)) {
    QuantizeTable(*model.named_parameters().find(name), name, type, result);
  }
  flush(outside);
  result.calibration_seconds = run.seconds;
  result.total_seconds = SecondsSince(start);
  return result;
}

}  // namespace atq
