// Sensitivity per layer and candidate grid, and the bit allocation under a budget.
#include "quant/mixed_precision.h"

#include <algorithm>
#include <numeric>

#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "models/lm_linear.h"
#include "quant/calibration.h"
#include "quant/lm_calibration.h"
#include "quant/method.h"
#include "quant/planner.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/strings.h"

namespace atq {
namespace {

// For every linear layer of the blocks, the mean over `samples` windows of each output channel's summed squared
// gradient of the next-token loss.
std::map<std::string, torch::Tensor> OutputFisher(CausalLmImpl& model, const Tokenizer& tokenizer,
                                                  const LmQuantizeOptions& options, int64_t samples) {
  torch::AutoGradMode enable_grad(true);  // callers run under NoGradGuard
  const torch::Tensor ids =
      SampleCalibration(tokenizer, options.text, samples, options.length, options.seed).to(model.parameters().front().device());
  std::map<std::string, torch::Tensor> fisher;
  for (auto& parameter : model.parameters()) parameter.set_requires_grad(false);  // gradients of activations only
  std::vector<LmLinearImpl*> tapped;
  const std::vector<std::string> layers = QuantizableLayers(model);
  for (const auto& module : model.named_modules()) {
    auto* linear = module.value()->as<LmLinearImpl>();
    if (linear == nullptr || std::find(layers.begin(), layers.end(), module.key()) == layers.end()) continue;
    torch::Tensor& sum = fisher[module.key()] = torch::zeros({linear->weight.size(0)}, torch::kFloat32);
    const double weight = 1.0 / static_cast<double>(ids.size(0));
    linear->output_tap = [&sum, weight](const torch::Tensor& y) {
      y.register_hook([&sum, weight](const torch::Tensor& grad) {
        sum.add_(grad.to(torch::kFloat32).pow(2).reshape({-1, grad.size(-1)}).sum(0).cpu(), weight);
      });
    };
    tapped.push_back(linear);
  }
  Progress progress("fisher", ids.size(0), "windows");
  for (int64_t sample = 0; sample < ids.size(0); ++sample) {  // one window at a time: per-window gradients
    const torch::Tensor window = ids.slice(0, sample, sample + 1);
    torch::Tensor x = model.Embed(window).detach().requires_grad_(true);
    for (int64_t block = 0; block < model.config().num_layers; ++block) x = model.ForwardBlock(static_cast<size_t>(block), x);
    const torch::Tensor logits = model.Head(x);
    const torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits.slice(1, 0, -1).reshape({-1, logits.size(-1)}).to(torch::kFloat32), window.slice(1, 1).reshape({-1}));
    loss.backward();
    progress.Advance();
  }
  progress.Finish();
  for (LmLinearImpl* linear : tapped) linear->output_tap = nullptr;
  return fisher;
}

}  // namespace

WeightGrid ParseCandidateGrid(const std::string& item, const WeightGrid& base) {
  const std::vector<std::string> parts = Split(item, '/');
  WeightGrid grid = base;
  const auto fail = [&]() { Fail("mixed-precision candidate '{}': expected ternary, q8_0, q4_0, tq2_0, tq1_0 or 2..8, then "
                                 "optional /g<N>, /channel, /tensor, /sym, /asym, /base3", item); };
  if (parts[0] == "ternary") {
    grid.kind = GridKind::kTernary;
  } else if (const std::optional<WeightGrid> ggml = GgmlGridByName(parts[0], grid)) {
    grid = *ggml;
  } else if (parts[0].size() == 1 && parts[0][0] >= '2' && parts[0][0] <= '8') {
    grid.kind = GridKind::kUniform;
    grid.bits = parts[0][0] - '0';
  } else {
    fail();
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    if (part == "channel" || part == "tensor") {
      grid.granularity = part == "channel" ? Granularity::kChannel : Granularity::kTensor;
      grid.group_size = 0;
    } else if (part == "sym" || part == "asym") {
      grid.symmetric = part == "sym";
    } else if (part == "base3") {
      grid.base3_packing = true;
    } else if (part.size() > 1 && part[0] == 'g' && std::all_of(part.begin() + 1, part.end(), ::isdigit)) {
      grid.granularity = Granularity::kGroup;
      grid.group_size = std::stoll(part.substr(1));
    } else {
      fail();
    }
  }
  ValidateGrid(grid);
  return grid;
}

std::vector<WeightGrid> ParseCandidateGrids(const std::string& list, const WeightGrid& base) {
  std::vector<WeightGrid> grids;
  for (const std::string& item : Split(list, ',')) {
    if (!item.empty()) grids.push_back(ParseCandidateGrid(item, base));
  }
  Require(!grids.empty(), "mixed precision needs at least one candidate grid");
  return grids;
}

std::string SensitivityKey(const LmQuantizeOptions& options) {
  const GptqOptions& gptq = options.gptq;
  return nlohmann::json{{"candidates", options.mixed_candidates},
                        {"score", options.sensitivity},
                        {"fisher_samples", options.fisher_samples},
                        {"method", options.recipe.method},
                        {"grid", DescribeGrid(options.recipe.grid)},
                        {"atq_calibrate", options.atq_calibrate},
                        {"atq_ratios", options.atq_ratios},
                        {"gptq", {gptq.damp, gptq.max_damp_raises, gptq.block_size, gptq.act_order, gptq.static_groups}},
                        {"calibration", {options.text, options.samples, options.length, options.seed, options.batch_size}}}
      .dump();
}

std::vector<LayerSensitivity> MeasureSensitivity(CausalLmImpl& model, const Tokenizer& tokenizer,
                                                 const LmQuantizeOptions& options,
                                                 const std::vector<WeightGrid>& candidates, SensitivityScore score) {
  std::map<std::string, torch::Tensor> fisher;
  if (score == SensitivityScore::kFisher) {
    fisher = OutputFisher(model, tokenizer, options, std::min<int64_t>(options.samples, options.fisher_samples));
  }
  std::vector<LayerSensitivity> out;
  Progress progress("sensitivity", static_cast<int64_t>(QuantizableLayers(model).size() * candidates.size()),
                    "layer grids");
  Require(options.samples > 0, "sensitivity is measured on calibration data (nsamples > 0)");
  // The full-precision model throughout: the visitor leaves every weight as it is.
  CalibrateBlocks(model, tokenizer, options, [&](int64_t, std::vector<CalibratedLayer>& layers, const std::vector<size_t>&) {
    for (const CalibratedLayer& layer : layers) {
      const torch::Tensor weight = layer.linear->weight.detach().to(torch::kFloat32);
      LayerSensitivity sensitivity{layer.name, weight.numel(), {}, {}};
      for (const WeightGrid& grid : candidates) {
        const QuantMethodRow& method = MethodForGrid(options.recipe.method, grid);
        const QuantizedWeight q = method.quantize({weight, layer.hessian, grid, options, layer.name}).weight;
        sensitivity.bytes.push_back(PackedBytes(q.layout));
        if (score == SensitivityScore::kFisher) {
          const torch::Tensor error = weight - q.values;  // H = 2 X X^T / n, so rows' d H d^T / 2 = ||d X||^2 / n
          const torch::Tensor row_error = (error.matmul(layer.hessian) * error).sum(1) / 2;
          sensitivity.sensitivity.push_back((fisher.at(layer.name).to(row_error.device()) * row_error).sum().item<double>());
        } else {
          sensitivity.sensitivity.push_back(RelativeOutputError(weight, q.values, layer.hessian));
        }
        progress.Advance(1, layer.name + " " + DescribeGrid(grid));
      }
      out.push_back(std::move(sensitivity));
    }
    std::vector<size_t> done(layers.size());  // every layer, in one pass
    std::iota(done.begin(), done.end(), 0);
    return done;
  });
  progress.Finish();
  return out;
}

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
    recipe.method = std::string(MethodForGrid(recipe.method, recipe.grid).name);
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

std::vector<size_t> AllocateBits(const std::vector<LayerSensitivity>& layers, double budget_bits) {
  Require(!layers.empty(), "no layers to allocate bits to");
  int64_t weights = 0;
  std::vector<std::vector<double>> costs, losses;
  for (const LayerSensitivity& layer : layers) {
    weights += layer.weights;
    costs.emplace_back(layer.bytes.begin(), layer.bytes.end());
    losses.push_back(layer.sensitivity);
  }
  // Bytes against bits per weight: budget_bits / 8 * weights bytes in all.
  return PlanUnderBudget(costs, losses, budget_bits / 8.0 * static_cast<double>(weights));
}

std::vector<size_t> KeepMostSensitive(const std::vector<LayerSensitivity>& layers, size_t base, size_t high, int64_t k) {
  std::vector<std::vector<double>> losses;
  for (const LayerSensitivity& layer : layers) losses.push_back(layer.sensitivity);
  return PlanKeepTop(losses, base, high, k);
}

nlohmann::json MixedPlanJson(const std::vector<LayerSensitivity>& layers, const std::vector<WeightGrid>& candidates,
                             const std::vector<size_t>& choice) {
  nlohmann::json grids = nlohmann::json::array();
  for (const WeightGrid& grid : candidates) grids.push_back(DescribeGrid(grid));
  nlohmann::json rows = nlohmann::json::array();
  int64_t weights = 0, bytes = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    weights += layers[l].weights;
    bytes += layers[l].bytes[choice[l]];
    rows.push_back({{"layer", layers[l].name},
                    {"weights", layers[l].weights},
                    {"sensitivity", layers[l].sensitivity},
                    {"bytes", layers[l].bytes},
                    {"chosen", DescribeGrid(candidates[choice[l]])}});
  }
  return {{"candidates", grids},
          {"bits_per_weight", weights > 0 ? 8.0 * static_cast<double>(bytes) / static_cast<double>(weights) : 0.0},
          {"layers", rows}};
}

}  // namespace atq
