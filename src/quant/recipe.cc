// Recipe files and settings for `atq quantize`.
#include "quant/recipe.h"

#include <algorithm>
#include <functional>

#include <yaml-cpp/yaml.h>

#include "util/error.h"
#include "quant/method.h"
#include "util/parse.h"
#include "util/setting_table.h"
#include "util/paths.h"
#include "io/yaml_file.h"

namespace atq {
namespace {

std::optional<QuantType> ParseTableType(const std::string& value, const std::string& where) {
  if (value == "f32" || value == "none") return std::nullopt;
  const auto type = ParseQuantType(value);
  Require(type && Traits(*type).is_quantized, "{}: '{}' is not a quantized format of `atq formats`", where, value);
  return type;
}

// Keys that describe one layer (allowed under layers:), and the rest.
const SettingTable<LayerRecipe>& LayerSetters() {
  static const SettingTable<LayerRecipe> setters = {
      {"method",
       [](LayerRecipe& r, const std::string& v, const std::string& where) {
         try {
           r.method = std::string(FindQuantMethod(v).name);
         } catch (const Error& error) {
           Fail("{}: {}", where, error.what());
         }
       }},
      {"bits",
       [](LayerRecipe& r, const std::string& v, const std::string& where) {
         r.grid.kind = GridKind::kUniform;
         r.grid.bits = static_cast<int>(ParseInt(v, where));
       }},
      {"ternary",
       [](LayerRecipe& r, const std::string& v, const std::string& where) {
         if (ParseBool(v, where)) r.grid.kind = GridKind::kTernary;
       }},
      {"format",
       [](LayerRecipe& r, const std::string& v, const std::string& where) {
         const std::optional<WeightGrid> grid = GgmlGridByName(v, r.grid);
         Require(grid.has_value(), "{}: format '{}' is not q8_0, q4_0, tq2_0 or tq1_0 (llama.cpp's block grids)", where, v);
         r.grid = *grid;
       }},
      {"symmetric", [](LayerRecipe& r, const std::string& v, const std::string& where) { r.grid.symmetric = ParseBool(v, where); }},
      {"granularity",
       [](LayerRecipe& r, const std::string& v, const std::string& where) {
         r.grid.granularity = ParseChoice<Granularity>(
             v, where, {{"tensor", Granularity::kTensor}, {"channel", Granularity::kChannel}, {"group", Granularity::kGroup}});
       }},
      {"group_size",
       [](LayerRecipe& r, const std::string& v, const std::string& where) {
         r.grid.group_size = ParseInt(v, where);
         r.grid.granularity = Granularity::kGroup;
       }},
      {"threshold",
       [](LayerRecipe& r, const std::string& v, const std::string& where) {
         r.grid.threshold_rule = ParseChoice<ThresholdRule>(
             v, where, {{"ratio", ThresholdRule::kRatio}, {"sparsity", ThresholdRule::kSparsity},
                        {"magnitude", ThresholdRule::kAbsolute}, {"absmax", ThresholdRule::kAbsmax}});
       }},
      {"threshold_value", [](LayerRecipe& r, const std::string& v, const std::string& where) { r.grid.threshold_value = ParseDouble(v, where); }},
      {"base3", [](LayerRecipe& r, const std::string& v, const std::string& where) { r.grid.base3_packing = ParseBool(v, where); }},
  };
  return setters;
}

const SettingTable<LmQuantizeOptions>& GlobalSetters() {
  static const SettingTable<LmQuantizeOptions> setters = {
      {"calib", [](LmQuantizeOptions& o, const std::string& v, const std::string&) { o.text = v; }},
      {"nsamples", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.samples = ParseInt(v, where); }},
      {"seqlen", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.length = ParseInt(v, where); }},
      {"seed", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.seed = static_cast<uint64_t>(ParseInt(v, where)); }},
      {"batch_size", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.batch_size = ParseInt(v, where); }},
      {"damp", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.gptq.damp = ParseDouble(v, where); }},
      {"block_size", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.gptq.block_size = ParseInt(v, where); }},
      {"act_order", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.gptq.act_order = ParseBool(v, where); }},
      {"static_groups", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.gptq.static_groups = ParseBool(v, where); }},
      {"true_sequential", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.true_sequential = ParseBool(v, where); }},
      {"atq_calibrate", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.atq_calibrate = ParseBool(v, where); }},
      {"embeddings", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.embedding_type = ParseTableType(v, where); }},
      {"head", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.head_type = ParseTableType(v, where); }},
      {"mixed_candidates", [](LmQuantizeOptions& o, const std::string& v, const std::string&) { o.mixed_candidates = v; }},
      {"mixed_budget", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.mixed_budget = ParseDouble(v, where); }},
      {"mixed_keep_top", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.mixed_keep_top = ParseInt(v, where); }},
      {"sensitivity", [](LmQuantizeOptions& o, const std::string& v, const std::string&) { o.sensitivity = v; }},
      {"fisher_samples", [](LmQuantizeOptions& o, const std::string& v, const std::string& where) { o.fisher_samples = ParseInt(v, where); }},
  };
  return setters;
}

std::string ScalarText(const YAML::Node& node, const std::string& where) {
  Require(node.IsScalar(), "{}: expected a single value", where);
  return node.Scalar();
}

}  // namespace

const std::vector<std::string_view>& RecipeKeys() {
  static const std::vector<std::string_view> keys = [] {
    std::vector<std::string_view> out;
    static std::vector<std::string> names;
    for (const std::string& key : LayerSetters().Keys()) names.push_back(key);
    for (const std::string& key : GlobalSetters().Keys()) names.push_back(key);
    for (const std::string& key : names) out.push_back(key);
    out.push_back("layers");
    std::sort(out.begin(), out.end());
    return out;
  }();
  return keys;
}

QuantizeRecipe ReadRecipeFile(const std::string& path) {
  const YAML::Node root = LoadYamlFile(path);
  Require(root.IsMap(), "{}: a recipe is a map of settings (key: value)", path);
  QuantizeRecipe recipe;
  AddRecipeSettings(root, recipe, path);
  return recipe;
}

void AddRecipeSettings(const YAML::Node& map, QuantizeRecipe& recipe, const std::string& where,
                       std::string_view skip_key) {
  for (const auto& item : map) {
    const std::string key = item.first.as<std::string>();
    if (key == skip_key) continue;
    const std::string key_where = fmt::format("{}: key '{}'", where, key);
    if (key == "layers") {
      Require(item.second.IsMap(), "{}: expected a map of module name -> settings or keep", key_where);
      for (const auto& layer : item.second) {
        const std::string name = layer.first.as<std::string>();
        const std::string layer_where = fmt::format("{}: layer '{}'", where, name);
        if (layer.second.IsScalar() && layer.second.Scalar() == "keep") {
          recipe.kept_layers.push_back(name);
          continue;
        }
        Require(layer.second.IsMap(), "{}: expected a map of settings or keep", layer_where);
        for (const auto& setting : layer.second) {
          const std::string layer_key = setting.first.as<std::string>();
          Require(LayerSetters().Has(layer_key), "{}: '{}' is not a per-layer setting (one of: {})", layer_where,
                  layer_key, fmt::join(RecipeKeys(), ", "));
          recipe.layer_settings[name][layer_key] = ScalarText(setting.second, layer_where + " " + layer_key);
        }
      }
      continue;
    }
    Require(LayerSetters().Has(key) || GlobalSetters().Has(key), "{}: unknown setting (one of: {})",
            key_where, fmt::join(RecipeKeys(), ", "));
    recipe.settings[key] = ScalarText(item.second, key_where);
  }
}

LmQuantizeOptions BuildQuantizeOptions(const QuantizeRecipe& recipe, const std::string& source) {
  LmQuantizeOptions options;
  options.text = ProjectDataDir() + "/corpus/train.txt";
  // Settings that contradict each other are refused, not resolved by whichever happens to be applied last.
  const auto has = [&](const char* key) { return recipe.settings.count(key) > 0; };
  const bool ternary = has("ternary") && ParseBool(recipe.settings.at("ternary"), fmt::format("{}: ternary", source));
  Require(!(ternary && has("bits")), "{}: ternary and bits {} contradict each other (a ternary grid has no bit width); "
          "give one", source, has("bits") ? recipe.settings.at("bits") : "");
  Require(!(ternary && has("format")), "{}: ternary and format contradict each other; give one", source);
  Require(!(has("bits") && has("format")), "{}: bits and format contradict each other (format {} has its own bits); "
          "give one", source, has("format") ? recipe.settings.at("format") : "");
  Require(!has("mixed_budget") || has("mixed_candidates"),
          "{}: mixed_budget needs mixed_candidates (the grids a layer may get, e.g. \"ternary,4,8/channel\")", source);
  for (const auto& [key, value] : recipe.settings) {
    if (LayerSetters().Has(key)) {
      LayerSetters().Apply(options.recipe, key, value, source);
    } else if (GlobalSetters().Has(key)) {
      GlobalSetters().Apply(options, key, value, source);
    } else {
      Fail("{}: {}: unknown setting (one of: {})", source, key, fmt::join(RecipeKeys(), ", "));
    }
  }
  // A layer's own settings apply on top of the top-level recipe.
  for (const auto& [name, settings] : recipe.layer_settings) {
    LayerRecipe layer = options.recipe;
    for (const auto& [key, value] : settings) {
      Require(LayerSetters().Has(key), "{}: layer '{}': '{}' is not a per-layer setting", source, name, key);
      LayerSetters().Apply(layer, key, value, fmt::format("{}: layer '{}'", source, name));
    }
    options.layers[name] = layer;
  }
  for (const std::string& name : recipe.kept_layers) options.layers[name].keep = true;
  const auto check = [&](const LayerRecipe& layer, const std::string& where) {
    if (layer.keep) return;
    try {
      ValidateGrid(layer.grid);
    } catch (const Error& error) {
      Fail("{}{}: {}", source, where, error.what());
    }
    Require(FindQuantMethod(layer.method).accepts(layer.grid),
            "{}{}: method {} does not round to {} ({}); add ternary: true or use another method", source, where,
            layer.method, DescribeGrid(layer.grid), FindQuantMethod(layer.method).description);
  };
  check(options.recipe, "");
  for (const auto& [name, layer] : options.layers) check(layer, ": layer '" + name + "'");
  // Calibration bounds: windows x length tokens run through the model block by block, and their activations are
  // held per block; 2^20 windows or 2^20 tokens per window is far beyond any published recipe (GPTQ uses 128 x
  // 2048) and keeps a typo from sizing an allocation.
  constexpr int64_t kMaxSamples = int64_t{1} << 20, kMaxLength = int64_t{1} << 20;
  Require(options.samples >= 0, "{}: nsamples must be >= 0, not {}", source, options.samples);
  Require(options.samples <= kMaxSamples, "{}: nsamples {} is beyond the limit of {} calibration windows", source,
          options.samples, kMaxSamples);
  Require(options.length <= kMaxLength, "{}: seqlen {} is beyond the limit of {} tokens", source, options.length,
          kMaxLength);
  Require(options.samples == 0 || options.length > 1, "{}: seqlen must be > 1, not {}", source, options.length);
  Require(options.batch_size > 0, "{}: batch_size must be > 0, not {}", source, options.batch_size);
  Require(options.gptq.damp > 0, "{}: damp must be > 0, not {}", source, options.gptq.damp);
  Require(options.gptq.block_size > 0, "{}: block_size must be > 0, not {}", source, options.gptq.block_size);
  return options;
}

nlohmann::json RecipeJson(const QuantizeRecipe& recipe) {
  nlohmann::json layers = nlohmann::json::object();
  for (const auto& [name, settings] : recipe.layer_settings) layers[name] = settings;
  for (const std::string& name : recipe.kept_layers) layers[name] = "keep";
  nlohmann::json out = recipe.settings;
  if (!layers.empty()) out["layers"] = layers;
  return out;
}

}  // namespace atq
