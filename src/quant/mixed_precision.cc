// Sensitivity per layer and candidate grid, and the bit allocation under a budget.
#include "quant/mixed_precision.h"

#include <algorithm>
#include <numeric>

#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "models/lm_linear.h"
#include "quant/calibration.h"
#include "quant/knapsack.h"
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
  const auto fail = [&]() { Fail("mixed-precision candidate '{}': expected ternary, q8_0, q4_0 or 2..8, then optional /g<N>, "
                                 "/channel, /tensor, /sym, /asym, /base3", item); };
  if (parts[0] == "ternary") {
    grid.kind = GridKind::kTernary;
  } else if (parts[0] == "q8_0" || parts[0] == "q4_0") {
    grid = WithKind(grid, parts[0] == "q8_0" ? GridKind::kQ8_0 : GridKind::kQ4_0);
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
                        {"method", MethodName(options.recipe.method)},
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
  ForEachCalibratedBlock(model, tokenizer, options, [&](int64_t, std::vector<CalibratedLayer>& layers) {
    for (const CalibratedLayer& layer : layers) {
      const torch::Tensor weight = layer.linear->weight.detach().to(torch::kFloat32);
      LayerSensitivity sensitivity{layer.name, weight.numel(), {}, {}};
      for (const WeightGrid& grid : candidates) {
        LayerRecipe recipe = options.recipe;
        recipe.grid = grid;
        if (recipe.method == QuantMethod::kAtq && grid.kind != GridKind::kTernary) recipe.method = QuantMethod::kGptq;
        const QuantizedWeight q = QuantizeWeight(weight, layer.hessian, recipe, options, layer.name).weight;
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
  });
  progress.Finish();
  return out;
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
  try {
    return SolveMultipleChoiceKnapsack(costs, losses, budget_bits / 8.0 * static_cast<double>(weights));
  } catch (const Error& error) {
    Fail("a budget of {} bits per weight does not fit: {}", budget_bits, error.what());
  }
}

std::vector<size_t> KeepMostSensitive(const std::vector<LayerSensitivity>& layers, size_t base, size_t high, int64_t k) {
  std::vector<size_t> order(layers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return layers[a].sensitivity[base] > layers[b].sensitivity[base];
  });
  std::vector<size_t> choice(layers.size(), base);
  for (int64_t i = 0; i < k && i < static_cast<int64_t>(order.size()); ++i) choice[order[i]] = high;
  return choice;
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
