// Vision recipes: the setting table, parsing, YAML files.
#include "eval/vision_recipe.h"

#include <set>

#include <yaml-cpp/yaml.h>

#include "util/error.h"
#include "util/parse.h"
#include "util/setting_table.h"
#include "util/strings.h"
#include "io/yaml_file.h"

namespace atq {
namespace {

std::vector<LayerBitWidths> ParseCandidates(const std::string& value) {
  std::vector<LayerBitWidths> out;
  for (const std::string& item : Split(value, ',')) {
    if (!item.empty()) out.push_back(ParseBitWidths(item));
  }
  return out;
}

const SettingTable<VisionRecipe>& Setters() {
  static const SettingTable<VisionRecipe> setters = {
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
         r.ptq.per_channel = ParseChoice<bool>(v, w, {{"channel", true}, {"tensor", false}});
       }},
      {"range", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.ptq.activation_range = ParseChoice<RangeMethod>(
             v, w, {{"minmax", RangeMethod::kMinMax}, {"percentile", RangeMethod::kPercentile}, {"mse", RangeMethod::kMse}});
       }},
      {"activation_grid", [](VisionRecipe& r, const std::string& v, const std::string& w) {
         r.ptq.affine_activations = ParseChoice<bool>(v, w, {{"symmetric", false}, {"affine", true}});
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

}  // namespace

const std::vector<std::string>& VisionRecipeKeys() {
  static const std::vector<std::string> keys = Setters().Keys();
  return keys;
}

VisionRecipe ParseVisionRecipe(const std::map<std::string, std::string>& settings, const std::string& where) {
  VisionRecipe recipe;
  recipe.settings = settings;
  for (const auto& [key, value] : settings) Setters().Apply(recipe, key, value, where);
  Require(!recipe.first_last || recipe.mixed.empty(), "{}: first_last and mixed both set the layers' widths; "
          "give one", where);
  Require(!(recipe.ptq.bits.ternary && settings.count("wbits") > 0),
          "{}: ternary and wbits {} contradict each other (ternary weights have no bit width); give one", where,
          settings.count("wbits") > 0 ? settings.at("wbits") : "");
  if (recipe.name.empty()) {  // a name that says what the recipe does: "W4A8 channel mse ranking"
    const VisionPtqOptions& p = recipe.ptq;
    const char* ranges[] = {"minmax", "percentile", "mse"};
    recipe.name = recipe.full_precision
                      ? "fp32"
                      : fmt::format("{} {} {}{}{}", BitWidthsName(p.bits), p.per_channel ? "channel" : "tensor",
                                    ranges[static_cast<int>(p.activation_range)] +
                                        std::string(p.affine_activations ? " affine" : ""),
                                    p.ranking_aware ? " ranking" : "",
                                    recipe.mixed.empty() ? "" : " mixed-" + recipe.mixed) +
                            (recipe.first_last ? " first-last " + BitWidthsName(*recipe.first_last) : "");
  }
  return recipe;
}

std::vector<VisionRecipe> ReadVisionRecipes(const std::string& path) {
  const YAML::Node root = LoadYamlFile(path);
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
    const std::map<std::string, std::string> own = settings_of(root["configs"][i], where);
    // A config's weight grid replaces the base's as a whole (ternary over a base wbits is an override).
    if (own.count("ternary") > 0 || own.count("wbits") > 0) {
      settings.erase("ternary");
      settings.erase("wbits");
    }
    for (const auto& [key, value] : own) settings[key] = value;
    Require(settings.count("name") > 0 && !settings["name"].empty(), "{}: every config needs a name", where);
    Require(names.insert(settings["name"]).second, "{}: duplicate name '{}'", where, settings["name"]);
    recipes.push_back(ParseVisionRecipe(settings, where));
  }
  return recipes;
}

}  // namespace atq
