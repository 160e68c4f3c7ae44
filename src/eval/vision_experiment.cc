// Vision recipes: parsing, YAML files, and one measured run.
#include "eval/vision_experiment.h"

#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <set>

#include "eval/classifier_work.h"
#include "io/idx.h"
#include "models/quant_layers.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/parse.h"
#include "util/strings.h"

namespace atq {
namespace {

constexpr int64_t kFloat32Bytes = 4;

using Setter = std::function<void(VisionRecipe&, const std::string& value, const std::string& where)>;

std::vector<LayerBitWidths> ParseCandidates(const std::string& value) {
  std::vector<LayerBitWidths> out;
  for (const std::string& item : Split(value, ',')) {
    if (!item.empty()) out.push_back(ParseBitWidths(item));
  }
  return out;
}

const std::map<std::string, Setter>& Setters() {
  static const std::map<std::string, Setter> setters = {
      {"name", [](VisionRecipe& r, const std::string& v, const std::string&) { r.name = v; }},
      {"fp32", [](VisionRecipe& r, const std::string& v, const std::string& w) { r.full_precision = ParseBool(v, w); }},
      {"wbits", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.ptq.bits.weights = static_cast<int>(ParseInt(v, w));
       }},
      {"abits", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.ptq.bits.activations = static_cast<int>(ParseInt(v, w));
       }},
      {"ternary", [](VisionRecipe& r, const std::string& v, const std::string& w) { r.ptq.bits.ternary = ParseBool(v, w); }},
      {"ternary_ratio", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.ptq.ternary_ratio = ParseDouble(v, w);
         Require(r.ptq.ternary_ratio > 0, "{}: ternary_ratio must be positive", w);
       }},
      {"granularity", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         Require(v == "channel" || v == "tensor", "{}: granularity is channel or tensor, not '{}'", w, v);
         r.ptq.per_channel = v == "channel";
       }},
      {"range", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         if (v == "minmax") {
           r.ptq.activation_range = RangeMethod::kMinMax;
         } else if (v == "percentile") {
           r.ptq.activation_range = RangeMethod::kPercentile;
         } else if (v == "mse") {
           r.ptq.activation_range = RangeMethod::kMse;
         } else {
           Fail("{}: range is minmax, percentile or mse, not '{}'", w, v);
         }
       }},
      {"percentile", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.ptq.percentile = ParseDouble(v, w);
         Require(r.ptq.percentile > 0 && r.ptq.percentile <= 1, "{}: percentile must be in (0, 1]", w);
       }},
      {"ranking_aware", [](VisionRecipe& r, const std::string& v, const std::string& w) { r.ptq.ranking_aware = ParseBool(v, w); }},
      {"ranking_weight", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.ptq.ranking_weight = ParseDouble(v, w);
       }},
      {"fold_batchnorm", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.ptq.fold_batchnorm = ParseBool(v, w);
       }},
      {"mixed", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         Require(v.empty() || v == "threshold" || v == "size" || v == "energy",
                 "{}: mixed is threshold, size or energy, not '{}'", w, v);
         r.mixed = v;
       }},
      {"candidates", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         try {
           r.candidates = ParseCandidates(v);
         } catch (const Error& error) {
           Fail("{}: {}", w, error.what());
         }
         Require(!r.candidates.empty(), "{}: no candidates", w);
       }},
      {"budget", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.budget = ParseDouble(v, w);
         Require(r.budget > 0, "{}: budget must be positive", w);
       }},
      {"budget_like", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         try {
           ParseBitWidths(v);
         } catch (const Error& error) {
           Fail("{}: {}", w, error.what());
         }
         r.budget_like = v;
       }},
      {"high", [](VisionRecipe& r, const std::string& v, const std::string& w) { r.high = ParseDouble(v, w); }},
      {"moderate", [](VisionRecipe& r, const std::string& v, const std::string& w) { r.moderate = ParseDouble(v, w); }},
      {"first_last", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         try {
           r.first_last = ParseBitWidths(v);
         } catch (const Error& error) {
           Fail("{}: {}", w, error.what());
         }
       }},
  };
  return setters;
}

// The sensitivity table's cache key: every setting the table depends on.
std::string SensitivityKey(const VisionRecipe& recipe) {
  std::string key;
  for (const LayerBitWidths& candidate : recipe.candidates) key += BitWidthsName(candidate) + ",";
  return fmt::format("{}|{}|{}|{}|{}|{}", key, recipe.ptq.per_channel, static_cast<int>(recipe.ptq.activation_range),
                     recipe.ptq.percentile, recipe.ptq.ternary_ratio, recipe.ptq.fold_batchnorm);
}

// Chooses each layer's bit widths by the recipe's mixed-precision rule; returns the plan as JSON.
nlohmann::json PlanMixedPrecision(VisionExperiment& experiment, const VisionRecipe& recipe,
                                  const std::vector<LayerWork>& work, VisionPtqOptions& options) {
  const std::string key = SensitivityKey(recipe);
  auto cached = experiment.sensitivities.find(key);
  if (cached == experiment.sensitivities.end()) {
    LoadedClassifier copy = experiment.load();
    const torch::Tensor images =
        experiment.calibration.slice(0, 0, std::min(experiment.sensitivity_images, experiment.calibration.size(0)));
    cached = experiment.sensitivities
                 .emplace(key, MeasureVisionSensitivity(*copy.model, images, recipe.candidates, options))
                 .first;
  } else {
    LogInfo("mixed precision: reusing the sensitivities measured under the same settings");
  }
  const VisionSensitivity& table = cached->second;
  nlohmann::json plan = {{"rule", recipe.mixed}, {"sensitivity", table.ToJson()}};
  std::vector<size_t> choice;
  if (recipe.mixed == "threshold") {
    choice = AssignByThreshold(table, recipe.high, recipe.moderate);
    plan["high"] = recipe.high;
    plan["moderate"] = recipe.moderate;
  } else {
    // Costs per layer and candidate: packed bytes, or the layer's energy at the candidate's widths.
    std::vector<std::vector<double>> cost = table.bytes;
    double fixed = 0;
    if (recipe.mixed == "energy") {
      for (size_t l = 0; l < table.layers.size(); ++l) {
        const auto found = std::find_if(work.begin(), work.end(), [&](const LayerWork& w) { return w.name == table.layers[l]; });
        Require(found != work.end(), "mixed precision: no operation count for layer '{}'", table.layers[l]);
        for (size_t c = 0; c < table.candidates.size(); ++c) {
          const LayerBitWidths& b = table.candidates[c];
          cost[l][c] = TotalEnergy(NetworkEnergy(experiment.energy, {*found}, {{b.ternary ? 2 : b.weights, b.activations}}));
        }
      }
      for (const LayerWork& w : work) {
        if (w.operands == MacOperands::kActivationTimesActivation) {
          fixed += TotalEnergy(NetworkEnergy(experiment.energy, {w}, {{kFloatBits, options.bits.activations}}));
        }
      }
    }
    double budget = recipe.budget;
    if (!recipe.budget_like.empty()) {
      const std::string like = BitWidthsName(ParseBitWidths(recipe.budget_like));
      const auto index = std::find_if(table.candidates.begin(), table.candidates.end(),
                                      [&](const LayerBitWidths& c) { return BitWidthsName(c) == like; });
      Require(index != table.candidates.end(), "{}: budget_like {} must be one of the candidates", recipe.name, like);
      budget = fixed;
      for (const auto& row : cost) budget += row[static_cast<size_t>(index - table.candidates.begin())];
      plan["budget_like"] = like;
    }
    Require(budget > 0, "{}: mixed precision by {} needs budget or budget_like", recipe.name, recipe.mixed);
    choice = AssignUnderBudget(table, cost, fixed, budget);
    double used = fixed;
    for (size_t l = 0; l < choice.size(); ++l) used += cost[l][choice[l]];
    plan["budget"] = budget;
    plan["cost"] = used;
    plan["unit"] = recipe.mixed == "size" ? "bytes" : "pJ";
  }
  options.layers = ChosenBits(table, choice);
  nlohmann::json chosen = nlohmann::json::object();
  for (const auto& [layer, bits] : options.layers) chosen[layer] = BitWidthsName(bits);
  plan["chosen"] = chosen;
  return plan;
}

}  // namespace

const std::vector<std::string>& VisionRecipeKeys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> out;
    for (const auto& [key, setter] : Setters()) out.push_back(key);
    return out;
  }();
  return keys;
}

VisionRecipe ParseVisionRecipe(const std::map<std::string, std::string>& settings, const std::string& where) {
  VisionRecipe recipe;
  recipe.settings = settings;
  for (const auto& [key, value] : settings) {
    const auto setter = Setters().find(key);
    if (setter == Setters().end()) {
      std::string known;
      for (const std::string& k : VisionRecipeKeys()) known += (known.empty() ? "" : ", ") + k;
      Fail("{}: unknown setting '{}' (known: {})", where, key, known);
    }
    setter->second(recipe, value, where + ": " + key);
  }
  Require(!recipe.first_last || recipe.mixed.empty(), "{}: first_last and mixed both set the layers' widths; "
          "give one", where);
  if (recipe.name.empty()) {  // a name that says what the recipe does: "W4A8 channel mse ranking"
    const VisionPtqOptions& p = recipe.ptq;
    const char* ranges[] = {"minmax", "percentile", "mse"};
    recipe.name = recipe.full_precision
                      ? "fp32"
                      : fmt::format("{} {} {}{}{}", BitWidthsName(p.bits), p.per_channel ? "channel" : "tensor",
                                    ranges[static_cast<int>(p.activation_range)], p.ranking_aware ? " ranking" : "",
                                    recipe.mixed.empty() ? "" : " mixed-" + recipe.mixed) +
                            (recipe.first_last ? " first-last " + BitWidthsName(*recipe.first_last) : "");
  }
  return recipe;
}

std::vector<VisionRecipe> ReadVisionRecipes(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& error) {
    Fail("{}: {}", path, error.what());
  }
  Require(root.IsMap(), "{}: expected a map with configs: (and optionally base:)", path);
  const auto settings_of = [&](const YAML::Node& node, const std::string& where) {
    Require(node.IsMap(), "{}: expected a map of settings", where);
    std::map<std::string, std::string> out;
    for (const auto& item : node) {
      const std::string key = item.first.as<std::string>();
      Require(item.second.IsScalar(), "{}: '{}' must be a single value", where, key);
      out[key] = item.second.as<std::string>();
    }
    return out;
  };
  std::map<std::string, std::string> base;
  for (const auto& item : root) {
    const std::string key = item.first.as<std::string>();
    Require(key == "base" || key == "configs", "{}: unknown top-level key '{}' (base, configs)", path, key);
  }
  if (root["base"]) base = settings_of(root["base"], path + ": base");
  Require(root["configs"] && root["configs"].IsSequence() && root["configs"].size() > 0,
          "{}: configs: must be a non-empty list", path);
  std::vector<VisionRecipe> recipes;
  std::set<std::string> names;
  for (size_t i = 0; i < root["configs"].size(); ++i) {
    const std::string where = fmt::format("{}: configs[{}]", path, i);
    std::map<std::string, std::string> settings = base;
    for (const auto& [key, value] : settings_of(root["configs"][i], where)) settings[key] = value;
    Require(settings.count("name") > 0 && !settings["name"].empty(), "{}: every config needs a name", where);
    Require(names.insert(settings["name"]).second, "{}: duplicate name '{}'", where, settings["name"]);
    recipes.push_back(ParseVisionRecipe(settings, where));
  }
  return recipes;
}

VisionOutcome RunVisionRecipe(VisionExperiment& experiment, const VisionRecipe& recipe) {
  const auto start = std::chrono::steady_clock::now();
  VisionOutcome outcome;
  outcome.name = recipe.name;
  outcome.details["recipe"] = recipe.settings;
  LoadedClassifier loaded = experiment.load();
  ClassifierModule& model = *loaded.model;
  const std::vector<LayerWork> work =
      CountClassifierWork(model, loaded.config.in_channels, loaded.config.image_size);
  VisionPtqOptions options = recipe.ptq;
  std::vector<LayerBits> bits(work.size());  // float32 throughout
  int64_t packed_layer_bytes = 0, layer_float_bytes = 0;
  // A checkpoint with layers trained quantized is measured as trained: those layers keep their bits, the rest
  // and every activation stay float.
  const auto layers = model.QuantLayers();
  const bool trained = std::any_of(layers.begin(), layers.end(), [](const auto& layer) {
    return layer.second->quant_config().quantized;
  });
  if (recipe.full_precision && trained) {
    options = VisionPtqOptions{};
    options.bits = {kFloatBits, kFloatBits, false};
    outcome.details["as_trained"] = true;
  }
  if (!recipe.full_precision || trained) {
    if (!recipe.mixed.empty()) outcome.details["mixed"] = PlanMixedPrecision(experiment, recipe, work, options);
    if (recipe.first_last) {
      options.layers[layers.front().first] = options.layers[layers.back().first] = *recipe.first_last;
    }
    const VisionPtqReport report = QuantizeClassifier(model, experiment.calibration, options);
    outcome.details["layers"] = report.ToJson();
    packed_layer_bytes = report.packed_bytes();
    bits = RecipeBits(work, report, options.bits.activations);
    for (const auto& [name, interface] : model.QuantLayers()) {
      auto* layer = dynamic_cast<QuantWeightLayer*>(interface);
      layer_float_bytes += (layer->weight.numel() + (layer->bias.defined() ? layer->bias.numel() : 0)) * kFloat32Bytes;
    }
  }
  outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int64_t parameters = 0;
  for (const torch::Tensor& parameter : model.parameters()) parameters += parameter.numel();
  outcome.model_bytes = parameters * kFloat32Bytes - layer_float_bytes + packed_layer_bytes;
  const std::vector<LayerEnergy> energy = NetworkEnergy(experiment.energy, work, bits);
  outcome.energy_pj = TotalEnergy(energy);
  outcome.details["energy"] = EnergyJson(experiment.energy, energy);
  outcome.accuracy = Evaluate(model, experiment.test).accuracy;
  LogInfo("{}: accuracy {:.2f}%, {:.3f} MB, {:.3f} uJ per image", recipe.name, 100 * outcome.accuracy,
          outcome.model_bytes / 1e6, outcome.energy_pj / 1e6);
  return outcome;
}

torch::Tensor CalibrationImages(const ClassifierConfig& config, const std::string& data_dir, int64_t count,
                                uint64_t seed) {
  Require(count > 0, "calibration needs at least one image, not {}", count);
  const std::string dir = data_dir.empty() ? DefaultDataDir(config.dataset) : data_dir;
  const ImageTensors train = ToTensors(LoadIdxDataset(dir, /*train=*/true), config.normalization);
  Require(train.images.size(2) == config.image_size && train.images.size(1) == config.in_channels,
          "{}: training images are {}x{} with {} channel(s); the model takes {}x{} with {}", dir,
          train.images.size(2), train.images.size(3), train.images.size(1), config.image_size, config.image_size,
          config.in_channels);
  const std::vector<int64_t> order = ShuffledOrder(train.size(), seed);
  const int64_t n = std::min(count, train.size());
  return train.images.index_select(0, torch::tensor(std::vector<int64_t>(order.begin(), order.begin() + n)));
}

}  // namespace atq
