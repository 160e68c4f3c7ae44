// RunVisionPareto: the measured table, its frontiers, and the plots.
#include "eval/vision_pareto.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include <fmt/format.h>

#include "eval/pareto.h"
#include "io/atomic_file.h"
#include "report/plot.h"
#include "util/log.h"

namespace atq {
namespace fs = std::filesystem;
namespace {

void WriteTable(const std::vector<VisionParetoRow>& rows, const std::string& model_name, const std::string& out_dir) {
  nlohmann::json table = nlohmann::json::array();
  std::string csv = "name,accuracy,accuracy_drop_points,model_bytes,energy_uj,energy_frontier,size_frontier,quantize_seconds\n";
  const double reference = rows.front().outcome.accuracy;
  for (const VisionParetoRow& row : rows) {
    nlohmann::json json = row.outcome.details;
    json["name"] = row.outcome.name;
    json["accuracy"] = row.outcome.accuracy;
    json["model_bytes"] = row.outcome.model_bytes;
    json["energy_pj"] = row.outcome.energy_pj;
    json["quantize_seconds"] = row.outcome.seconds;
    json["energy_frontier"] = row.energy_frontier;
    json["size_frontier"] = row.size_frontier;
    table.push_back(json);
    csv += fmt::format("\"{}\",{:.4f},{:.2f},{},{:.3f},{},{},{:.1f}\n", row.outcome.name, row.outcome.accuracy,
                       100 * (reference - row.outcome.accuracy), row.outcome.model_bytes, row.outcome.energy_pj / 1e6,
                       row.energy_frontier, row.size_frontier, row.outcome.seconds);
  }
  const nlohmann::json out = {{"model", model_name}, {"first_row_is_reference", true}, {"rows", table}};
  WriteFileAtomically((fs::path(out_dir) / "pareto.json").string(), out.dump(2) + "\n");
  WriteFileAtomically((fs::path(out_dir) / "pareto.csv").string(), csv);
}

// Marks each row's frontier membership for cost(row).
template <typename Cost, typename Mark>
void MarkFrontier(std::vector<VisionParetoRow>& rows, Cost cost, Mark mark) {
  std::vector<ParetoPoint> points;
  for (const VisionParetoRow& row : rows) points.push_back({cost(row), row.outcome.accuracy});
  for (const size_t i : ParetoFrontier(points)) mark(rows[i]);
}

// Recipes at about the same point share one label, and the y range shows the recipes within kZoomPoints of the
// best accuracy; the title names those below it.
constexpr double kZoomPoints = 10;
constexpr double kSameCost = 0.03;     // relative cost difference
constexpr double kSameAccuracy = 0.3;  // points

template <typename Cost>
void PlotFrontier(const std::vector<VisionParetoRow>& rows, Cost cost, bool VisionParetoRow::*on_frontier,
                  const std::string& model_name, const std::string& what, const std::string& png_path) {
  PlotSpec spec;
  spec.title = fmt::format("{}: accuracy against {}", model_name, what);
  spec.x_label = what;
  spec.y_label = "test accuracy (%)";
  spec.log_x = true;
  PlotSeries all("recipes", {}, {}, /*points_only=*/true);
  PlotSeries frontier("Pareto frontier", {}, {});
  std::vector<size_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cost(rows[a]) < cost(rows[b]); });
  double best = 0;
  for (const VisionParetoRow& row : rows) best = std::max(best, 100 * row.outcome.accuracy);
  double lowest_shown = best;
  std::string below;
  std::vector<std::pair<size_t, std::string>> labels;  // (index into all, text)
  for (const size_t i : order) {
    const double x = cost(rows[i]), y = 100 * rows[i].outcome.accuracy;
    all.x.push_back(x);
    all.y.push_back(y);
    all.labels.emplace_back();
    if (y < best - kZoomPoints) {
      below += fmt::format("{}{} {:.1f}%", below.empty() ? "" : ", ", rows[i].outcome.name, y);
    } else {
      lowest_shown = std::min(lowest_shown, y);
      const auto same = std::find_if(labels.begin(), labels.end(), [&](const auto& label) {
        return std::abs(all.x[label.first] - x) <= kSameCost * x && std::abs(all.y[label.first] - y) <= kSameAccuracy;
      });
      if (same == labels.end()) {
        labels.emplace_back(all.x.size() - 1, rows[i].outcome.name);
      } else {
        same->second += ", " + rows[i].outcome.name;
      }
    }
    if (rows[i].*on_frontier) {
      frontier.x.push_back(x);
      frontier.y.push_back(y);
    }
  }
  for (const auto& [index, text] : labels) all.labels[index] = text;
  spec.y_min = std::floor(lowest_shown - 0.5);
  spec.y_max = std::ceil(best + 0.5);
  if (!below.empty()) spec.title += " (below the chart: " + below + ")";
  spec.series = {frontier, all};
  RenderPlot(spec, png_path);
}

void PlotChosenBits(const VisionOutcome& outcome, const std::string& model_name, const std::string& png_path) {
  const nlohmann::json& layers = outcome.details["layers"]["layers"];
  PlotSpec spec;
  spec.title = fmt::format("{}: {}, bits per layer", model_name, outcome.name);
  spec.x_label = "layer";
  spec.y_label = "bits";
  spec.width = std::max(900, 22 * static_cast<int>(layers.size()));
  PlotSeries weights("weights", {}, {}), activations("activations", {}, {});
  for (const auto& row : layers) {
    spec.categories.push_back(row["layer"].get<std::string>());
    weights.y.push_back(row["weight_bits"].is_string() ? 1.58 : row["weight_bits"].get<double>());
    activations.y.push_back(row["activation_bits"].get<double>());
  }
  spec.series = {weights, activations};
  RenderPlot(spec, png_path);
}

std::string FileStem(const std::string& name) {
  std::string out;
  for (const char c : name) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

}  // namespace

std::vector<VisionParetoRow> RunVisionPareto(VisionExperiment& experiment, const std::vector<VisionRecipe>& recipes,
                                             const std::string& model_name, const std::string& out_dir, bool plot) {
  fs::create_directories(out_dir);
  std::vector<VisionParetoRow> rows;
  for (size_t i = 0; i < recipes.size(); ++i) {
    LogInfo("pareto {}/{}: {}", i + 1, recipes.size(), recipes[i].name);
    rows.push_back({RunVisionRecipe(experiment, recipes[i])});
    WriteTable(rows, model_name, out_dir);
  }
  const auto energy = [](const VisionParetoRow& row) { return row.outcome.energy_pj / 1e6; };
  const auto size = [](const VisionParetoRow& row) { return static_cast<double>(row.outcome.model_bytes) / 1e6; };
  MarkFrontier(rows, energy, [](VisionParetoRow& row) { row.energy_frontier = true; });
  MarkFrontier(rows, size, [](VisionParetoRow& row) { row.size_frontier = true; });
  WriteTable(rows, model_name, out_dir);
  if (plot) {
    PlotFrontier(rows, energy, &VisionParetoRow::energy_frontier, model_name, "energy per image (uJ)",
                 (fs::path(out_dir) / "accuracy_vs_energy.png").string());
    PlotFrontier(rows, size, &VisionParetoRow::size_frontier, model_name, "model size (MB)",
                 (fs::path(out_dir) / "accuracy_vs_size.png").string());
    int index = 0;
    for (const auto& [key, table] : experiment.sensitivities) {
      PlotVisionSensitivity(table, model_name + ": per-layer sensitivity",
                            (fs::path(out_dir) / fmt::format("sensitivity{}.png", index++ == 0 ? "" : std::to_string(index))).string());
    }
    for (const VisionParetoRow& row : rows) {
      if (row.outcome.details.contains("mixed")) {
        PlotChosenBits(row.outcome, model_name, (fs::path(out_dir) / ("bits_" + FileStem(row.outcome.name) + ".png")).string());
      }
    }
  }
  return rows;
}

void PlotVisionSensitivity(const VisionSensitivity& table, const std::string& title, const std::string& png_path) {
  PlotSpec spec;
  spec.title = title;
  spec.x_label = "layer";
  spec.y_label = "||y_full - y_layer quantized||_2 per image";
  spec.categories = table.layers;
  spec.width = std::max(900, 22 * static_cast<int>(table.layers.size()));
  for (size_t c = 0; c < table.candidates.size(); ++c) {
    PlotSeries series(BitWidthsName(table.candidates[c]), {}, {});
    for (const auto& row : table.sensitivity) series.y.push_back(row[c]);
    spec.series.push_back(series);
  }
  RenderPlot(spec, png_path);
}

}  // namespace atq
