// Running a quantization sweep and writing its table and plot.
#include "eval/sweep.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <torch/torch.h>

#include "io/atomic_file.h"
#include "quant/lm_quantizer.h"
#include "quant/mixed_precision.h"
#include "report/plot.h"
#include "util/error.h"
#include "util/log.h"
#include "io/yaml_file.h"

namespace atq {
namespace fs = std::filesystem;
namespace {

std::string Scalar(const YAML::Node& node, const std::string& where) {
  Require(node.IsScalar(), "{}: expected a single value", where);
  return node.Scalar();
}

int64_t TotalParameters(CausalLmImpl& model) {
  int64_t count = 0;
  for (const auto& parameter : model.parameters()) count += parameter.numel();
  return count;
}

void WriteTable(const std::vector<SweepRow>& rows, const SweepOptions& options) {
  nlohmann::json table = nlohmann::json::array();
  std::string csv = "name,bits_per_weight,quantized_weights,quantized_bytes,model_bytes,perplexity,ratio,"
                    "scored_tokens,quantize_seconds,eval_seconds\n";
  for (const SweepRow& row : rows) {
    table.push_back(row.ToJson());
    csv += fmt::format("\"{}\",{:.4f},{},{},{},{:.4f},{:.4f},{},{:.1f},{:.1f}\n", row.name, row.bits_per_weight,
                       row.quantized_weights, row.quantized_bytes, row.model_bytes, row.perplexity, row.ratio, row.scored_tokens,
                       row.quantize_seconds, row.eval_seconds);
  }
  const nlohmann::json out = {{"model", options.model},
                              {"text", options.text},
                              {"protocol", PerplexityProtocolName(options.perplexity.protocol)},
                              {"ctx", options.perplexity.ctx},
                              {"rows", table}};
  WriteFileAtomically((fs::path(options.out_dir) / "sweep.json").string(), out.dump(2) + "\n");
  WriteFileAtomically((fs::path(options.out_dir) / "sweep.csv").string(), csv);
}

void PlotSweep(const std::vector<SweepRow>& rows, const SweepOptions& options) {
  PlotSpec spec;
  fs::path model = fs::path(options.model).lexically_normal();
  if (model.filename().empty()) model = model.parent_path();  // a trailing slash
  const std::string name = model.filename() == "model" ? model.parent_path().filename().string() : model.filename().string();
  spec.title = fmt::format("{}: perplexity against bits per weight", name);
  spec.x_label = "bits per weight of the quantized layers (scales included)";
  spec.y_label = "perplexity";
  std::map<std::string, PlotSeries> by_method;
  double low = 16, high = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    const SweepRow& row = rows[i];
    const std::string method = row.recipe.value("method", std::string("gptq"));
    PlotSeries& series = by_method[method];
    series.title = method;
    series.x.push_back(row.bits_per_weight);
    series.y.push_back(row.perplexity);
    low = std::min(low, row.bits_per_weight);
    high = std::max(high, row.bits_per_weight);
  }
  if (by_method.empty()) return;
  for (auto& [method, series] : by_method) {  // lines join configs in order of bits
    std::vector<size_t> order(series.x.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return series.x[a] < series.x[b]; });
    PlotSeries sorted{series.title, {}, {}};
    for (size_t i : order) {
      sorted.x.push_back(series.x[i]);
      sorted.y.push_back(series.y[i]);
    }
    spec.series.push_back(sorted);
  }
  spec.series.push_back({fmt::format("full precision ({:.2f})", rows[0].perplexity), {low, high},
                         {rows[0].perplexity, rows[0].perplexity}});
  RenderPlot(spec, (fs::path(options.out_dir) / "sweep.png").string());
}

}  // namespace

nlohmann::json SweepRow::ToJson() const {
  return {{"name", name},
          {"recipe", recipe},
          {"bits_per_weight", bits_per_weight},
          {"quantized_weights", quantized_weights},
          {"quantized_bytes", quantized_bytes},
          {"model_bytes", model_bytes},
          {"perplexity", perplexity},
          {"ratio", ratio},
          {"scored_tokens", scored_tokens},
          {"quantize_seconds", quantize_seconds},
          {"eval_seconds", eval_seconds}};
}

std::vector<SweepConfig> ReadSweepFile(const std::string& path) {
  const YAML::Node root = LoadYamlFile(path);
  Require(root.IsMap(), "{}: a sweep file is a map with base, configs and/or grid", path);
  for (const auto& item : root) {
    const std::string key = item.first.as<std::string>();
    Require(key == "base" || key == "configs" || key == "grid", "{}: unknown key '{}' (base, configs, grid)", path, key);
  }
  QuantizeRecipe base;
  if (root["base"]) {
    Require(root["base"].IsMap(), "{}: base must be a map of settings", path);
    AddRecipeSettings(root["base"], base, path + ": base");
  }
  std::vector<SweepConfig> configs;
  if (root["configs"]) {
    Require(root["configs"].IsSequence(), "{}: configs must be a list", path);
    for (size_t i = 0; i < root["configs"].size(); ++i) {
      const YAML::Node node = root["configs"][i];
      const std::string where = fmt::format("{}: configs[{}]", path, i);
      Require(node.IsMap() && node["name"], "{}: each config is a map with a name", where);
      SweepConfig config{Scalar(node["name"], where + " name"), base};
      AddRecipeSettings(node, config.recipe, where, "name");
      configs.push_back(std::move(config));
    }
  }
  if (root["grid"]) {
    Require(root["grid"].IsMap(), "{}: grid must be a map of setting -> list of values", path);
    // The grid's size before it is expanded: every config is a full quantization and perplexity run, so a grid
    // beyond kMaxSweepConfigs is a mistake, refused before the expansion allocates it.
    constexpr double kMaxSweepConfigs = 1000;
    double combinations = 1;
    for (const auto& axis : root["grid"]) {
      Require(axis.second.IsSequence() && axis.second.size() > 0, "{}: grid {} must be a non-empty list", path,
              axis.first.as<std::string>());
      combinations *= static_cast<double>(axis.second.size());
    }
    Require(combinations <= kMaxSweepConfigs,
            "{}: the grid has {:.0f} combinations, more than the {:.0f} a sweep runs (each is a quantization and a "
            "perplexity run); split it", path, combinations, kMaxSweepConfigs);
    LogInfo("{}: grid of {:.0f} configs", path, combinations);
    std::vector<SweepConfig> product = {{"", base}};
    for (const auto& axis : root["grid"]) {
      const std::string key = axis.first.as<std::string>();
      Require(axis.second.IsSequence() && axis.second.size() > 0, "{}: grid {} must be a non-empty list", path, key);
      std::vector<SweepConfig> next;
      for (const SweepConfig& partial : product) {
        for (const auto& value : axis.second) {
          SweepConfig config = partial;
          YAML::Node single;
          single[key] = static_cast<const YAML::Node&>(value);
          AddRecipeSettings(single, config.recipe, path + ": grid");
          config.name += (config.name.empty() ? "" : ",") + key + "=" + Scalar(value, path + ": grid " + key);
          next.push_back(std::move(config));
        }
      }
      product = std::move(next);
    }
    configs.insert(configs.end(), product.begin(), product.end());
  }
  Require(!configs.empty(), "{}: the sweep has no configs", path);
  std::set<std::string> names;
  for (const SweepConfig& config : configs) {
    Require(names.insert(config.name).second, "{}: two configs are named '{}'", path, config.name);
    BuildQuantizeOptions(config.recipe, path + ": " + config.name);  // every setting checked before any work
  }
  return configs;
}

std::vector<SweepRow> RunSweep(const SweepOptions& options) {
  fs::create_directories(options.out_dir);
  std::vector<SweepRow> rows;
  std::vector<int32_t> tokens;
  SensitivityCache sensitivities;  // mixed-precision configs that differ only in budget measure once
  for (size_t index = 0; index <= options.configs.size(); ++index) {
    LanguageModel lm = LoadLanguageModel(options.model, options.load);
    Require(lm.tokenizer != nullptr, "{}: no tokenizer found for this model", options.model);
    if (tokens.empty()) tokens = EncodeFile(*lm.tokenizer, options.text);
    SweepRow row;
    const int64_t parameters = TotalParameters(*lm.model);
    row.model_bytes = 2 * parameters;
    if (index == 0) {
      row.name = "full precision";
      row.recipe = nlohmann::json::object();
    } else {
      const SweepConfig& config = options.configs[index - 1];
      row.name = config.name;
      row.recipe = RecipeJson(config.recipe);
      LogInfo("sweep {}/{}: {}", index, options.configs.size(), config.name);
      LmQuantizeOptions quantize = BuildQuantizeOptions(config.recipe, config.name);
      quantize.sensitivity_cache = &sensitivities;
      const LmQuantizeResult result = QuantizeLanguageModel(*lm.model, *lm.tokenizer, quantize);
      int64_t packed_bytes = 0, packed_weights = 0, layer_bytes = 0;
      for (const LayerReport& layer : result.layers) {
        row.quantized_weights += layer.rows * layer.cols;
        layer_bytes += layer.packed_bytes;
      }
      for (const auto& [name, tensor] : result.packed) {
        packed_bytes += static_cast<int64_t>(tensor.bytes.size());
        packed_weights += tensor.layout.rows * tensor.layout.cols;
      }
      row.quantized_bytes = layer_bytes;
      row.bits_per_weight =
          row.quantized_weights > 0 ? 8.0 * static_cast<double>(layer_bytes) / static_cast<double>(row.quantized_weights) : 16;
      row.model_bytes = packed_bytes + 2 * (parameters - packed_weights);
      row.quantize_seconds = result.total_seconds;
    }
    const PerplexityResult perplexity = MeasurePerplexity(*lm.model, tokens, options.perplexity,
                                                          lm.tokenizer->add_bos() ? lm.tokenizer->bos_id() : -1);
    row.perplexity = perplexity.perplexity;
    row.scored_tokens = perplexity.scored_tokens;
    row.eval_seconds = perplexity.seconds;
    row.ratio = rows.empty() ? 1.0 : row.perplexity / rows.front().perplexity;
    LogInfo("sweep: {}: {:.3f} bits per weight, perplexity {:.4f} ({:.4f}x full precision)", row.name,
            row.bits_per_weight, row.perplexity, row.ratio);
    rows.push_back(row);
    WriteTable(rows, options);
  }
  if (options.plot) PlotSweep(rows, options);
  return rows;
}

}  // namespace atq
