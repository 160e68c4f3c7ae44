// atq pareto CHECKPOINT --configs FILE --out DIR: every vision recipe of FILE measured (accuracy, size, energy),
// the Pareto frontiers marked, and the plots.
#include <filesystem>
#include <memory>

#include <fmt/format.h>

#include "command.h"
#include "eval/vision_pareto.h"
#include "torch_vision_experiment_options.h"
#include "io/output_path.h"

namespace atq::cli {

RunFn DeclarePareto(CLI::App& app) {
  struct Options {
    VisionExperimentCliOptions experiment;
    std::string configs;
    std::string out_dir;
    bool no_plot = false;
  };
  auto o = std::make_shared<Options>();
  AddVisionExperimentOptions(app, o->experiment);
  app.add_option("--configs", o->configs, "YAML file: configs: [{name: ..., wbits: ..., abits: ...}, ...] (`atq ptq`'s "
                                          "settings; base: applies to all)")
      ->required();
  app.add_option("--out", o->out_dir, "Output folder: pareto.json, pareto.csv and the plots")->required();
  app.add_flag("--no-plot", o->no_plot, "Skip the PNG plots");
  return [o] {
    CheckOutputPath(o->out_dir, {o->experiment.classifier.checkpoint, o->configs}, "--out");
    const OutputLock lock(o->out_dir);
    const std::vector<VisionRecipe> recipes = ReadVisionRecipes(o->configs);  // checked before any work
    VisionExperiment experiment = MakeVisionExperiment(o->experiment);
    std::filesystem::path checkpoint = std::filesystem::path(o->experiment.classifier.checkpoint).lexically_normal();
    if (checkpoint.filename().empty()) checkpoint = checkpoint.parent_path();  // a trailing slash
    const std::string model_name = (std::filesystem::is_directory(checkpoint) ? checkpoint : checkpoint.parent_path())
                                       .filename()
                                       .string();
    const std::vector<VisionParetoRow> rows = RunVisionPareto(experiment, recipes, model_name, o->out_dir, !o->no_plot);
    fmt::print("{:<32} {:>9} {:>8} {:>10} {:>12}  frontier\n", "recipe", "accuracy", "drop", "size MB", "energy uJ");
    for (const VisionParetoRow& row : rows) {
      fmt::print("{:<32} {:>8.2f}% {:>8.2f} {:>10.3f} {:>12.3f}  {}{}\n", row.outcome.name, 100 * row.outcome.accuracy,
                 100 * (rows.front().outcome.accuracy - row.outcome.accuracy), row.outcome.model_bytes / 1e6,
                 row.outcome.energy_pj / 1e6, row.energy_frontier ? "energy " : "", row.size_frontier ? "size" : "");
    }
    fmt::print("results: {}/pareto.json\n", o->out_dir);
    return 0;
  };
}

}  // namespace atq::cli
