// atq sensitivity CHECKPOINT [--candidates W8A8,W6A6,W4A4] --out DIR: each layer's sensitivity at each candidate,
// ranked, with the threshold rule's assignment; JSON, CSV and a plot.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <numeric>

#include <fmt/format.h>

#include "util/error.h"
#include "command.h"
#include "eval/vision_pareto.h"
#include "io/atomic_file.h"
#include "torch_vision_experiment_options.h"
#include "torch_vision_recipe_flags.h"
#include "io/output_path.h"

namespace atq::cli {

RunFn DeclareSensitivity(CLI::App& app) {
  struct Options {
    VisionExperimentCliOptions experiment;
    SettingFlags flags{VisionRecipeFlags()};
    std::string out_dir;
    bool no_plot = false;
  };
  auto o = std::make_shared<Options>();
  AddVisionExperimentOptions(app, o->experiment);
  o->flags.Add(app);
  app.add_option("--out", o->out_dir, "Output folder: sensitivity.json, sensitivity.csv, sensitivity.png")->required();
  app.add_flag("--no-plot", o->no_plot, "Skip the PNG plot");
  return [o] {
    CheckOutputPath(o->out_dir, {o->experiment.classifier.checkpoint}, "--out");
    const OutputLock lock(o->out_dir);
    const VisionRecipe recipe = [&] {
      try {
        return ParseVisionRecipe(o->flags.Settings(), "command line");
      } catch (const Error& error) {  // a bad or contradictory flag: usage (exit 2)
        throw UsageError(error.what());
      }
    }();
    VisionExperiment experiment = MakeVisionExperiment(o->experiment);
    LoadedClassifier loaded = experiment.load();
    const torch::Tensor images = experiment.calibration.slice(0, 0, experiment.sensitivity_images);
    const VisionSensitivity table = MeasureVisionSensitivity(*loaded.model, images, recipe.candidates, recipe.ptq);
    std::filesystem::create_directories(o->out_dir);
    nlohmann::json json = table.ToJson();
    std::vector<size_t> rule;
    if (table.candidates.size() == 3) {
      rule = AssignByThreshold(table, recipe.high, recipe.moderate);
      json["threshold_rule"] = {{"high", recipe.high}, {"moderate", recipe.moderate}};
      for (size_t l = 0; l < rule.size(); ++l) {
        json["layers"][l]["threshold_rule"] = BitWidthsName(table.candidates[rule[l]]);
      }
    }
    // Ranked by sensitivity at the last (lowest) candidate.
    std::vector<size_t> order(table.layers.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return table.sensitivity[a].back() > table.sensitivity[b].back();
    });
    std::string header = fmt::format("{:>4} {:<34}", "rank", "layer"), csv = "rank,layer";
    for (const LayerBitWidths& c : table.candidates) {
      header += fmt::format(" {:>10}", BitWidthsName(c));
      csv += "," + BitWidthsName(c);
    }
    fmt::print("{}{}\n", header, rule.empty() ? "" : "  threshold rule");
    csv += rule.empty() ? "\n" : ",threshold_rule\n";
    for (size_t rank = 0; rank < order.size(); ++rank) {
      const size_t l = order[rank];
      std::string line = fmt::format("{:>4} {:<34}", rank + 1, table.layers[l]);
      csv += fmt::format("{},{}", rank + 1, table.layers[l]);
      for (const double s : table.sensitivity[l]) {
        line += fmt::format(" {:>10.4g}", s);
        csv += fmt::format(",{:.6g}", s);
      }
      const std::string chosen = rule.empty() ? "" : BitWidthsName(table.candidates[rule[l]]);
      fmt::print("{}  {}\n", line, chosen);
      csv += rule.empty() ? "\n" : "," + chosen + "\n";
    }
    const std::filesystem::path out(o->out_dir);
    WriteFileAtomically((out / "sensitivity.json").string(), json.dump(2) + "\n");
    WriteFileAtomically((out / "sensitivity.csv").string(), csv);
    if (!o->no_plot) {
      PlotVisionSensitivity(table, o->experiment.classifier.checkpoint + ": per-layer sensitivity",
                            (out / "sensitivity.png").string());
    }
    fmt::print("results: {}\n", (out / "sensitivity.json").string());
    return 0;
  };
}

}  // namespace atq::cli
