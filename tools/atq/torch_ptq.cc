// atq ptq CHECKPOINT --wbits 4 --abits 8 --granularity channel --calib N [--ranking-aware] [--mixed ...]:
// post-training quantization of an image classifier, measured against full precision (accuracy, size, energy).
#include <iostream>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "io/output_path.h"
#include "util/error.h"
#include "command.h"
#include "io/atomic_file.h"
#include "torch_vision_experiment_options.h"
#include "torch_vision_recipe_flags.h"

namespace atq::cli {
namespace {

void PrintLayers(const nlohmann::json& layers) {
  fmt::print("{:<34} {:>9} {:>6} {:>6} {:>12} {:>12} {:>10}\n", "layer", "weights", "W", "A", "weight err",
             "act scale", "bytes");
  for (const auto& row : layers["layers"]) {
    const std::string weight_bits = row["weight_bits"].is_string() ? "t" : std::to_string(row["weight_bits"].get<int>());
    fmt::print("{:<34} {:>9} {:>6} {:>6} {:>12.3e} {:>12.4g} {:>10}\n", row["layer"].get<std::string>(),
               row["weights"].get<int64_t>(), weight_bits, row["activation_bits"].get<int>(),
               row["weight_error"].get<double>(), row["activation_scale"].get<double>(),
               row["packed_bytes"].get<int64_t>());
  }
}

nlohmann::json OutcomeJson(const VisionOutcome& outcome) {
  nlohmann::json json = outcome.details;
  json["name"] = outcome.name;
  json["accuracy"] = outcome.accuracy;
  json["model_bytes"] = outcome.model_bytes;
  json["energy_pj"] = outcome.energy_pj;
  json["quantize_seconds"] = outcome.seconds;
  return json;
}

}  // namespace

RunFn DeclarePtq(CLI::App& app) {
  struct Options {
    VisionExperimentCliOptions experiment;
    SettingFlags flags{VisionRecipeFlags()};
    bool no_baseline = false;
    std::string json_path;
  };
  auto o = std::make_shared<Options>();
  AddVisionExperimentOptions(app, o->experiment);
  o->flags.Add(app);
  app.add_flag("--no-baseline", o->no_baseline,
               "Skip evaluating the model as given (full precision, or as trained for a QAT checkpoint)");
  app.add_option("--json", o->json_path, "Write the results as JSON here");
  return [o] {
    const VisionRecipe recipe = [&] {
      try {
        return ParseVisionRecipe(o->flags.Settings(), "command line");
      } catch (const Error& error) {  // a bad or contradictory flag: usage (exit 2)
        throw UsageError(error.what());
      }
    }();
    if (!o->json_path.empty()) CheckOutputPath(o->json_path, {o->experiment.classifier.checkpoint}, "--json");
    VisionExperiment experiment = MakeVisionExperiment(o->experiment);
    nlohmann::json json = {{"checkpoint", o->experiment.classifier.checkpoint}};
    std::optional<VisionOutcome> baseline;
    if (!o->no_baseline) {
      baseline = RunVisionRecipe(experiment, ParseVisionRecipe({{"name", "fp32"}, {"fp32", "true"}}, "baseline"));
      if (baseline->details.contains("as_trained")) baseline->name = "as trained";
      json["baseline"] = OutcomeJson(*baseline);
    }
    const VisionOutcome outcome = RunVisionRecipe(experiment, recipe);
    PrintLayers(outcome.details["layers"]);
    const auto line = [](const VisionOutcome& r) {
      fmt::print("{:<16} accuracy {:6.2f}%  size {:8.3f} MB  energy {:9.3f} uJ/image\n", r.name, 100 * r.accuracy,
                 r.model_bytes / 1e6, r.energy_pj / 1e6);
    };
    if (baseline) line(*baseline);
    line(outcome);
    if (baseline) {
      fmt::print("accuracy drop {:.2f} points, {:.2f}x smaller, {:.2f}x less energy\n",
                 100 * (baseline->accuracy - outcome.accuracy),
                 static_cast<double>(baseline->model_bytes) / static_cast<double>(outcome.model_bytes),
                 baseline->energy_pj / outcome.energy_pj);
      json["accuracy_drop_points"] = 100 * (baseline->accuracy - outcome.accuracy);
    }
    json["result"] = OutcomeJson(outcome);
    if (!o->json_path.empty()) {
      WriteFileAtomically(o->json_path, json.dump(2) + "\n");
      fmt::print("results: {}\n", o->json_path);
    }
    return 0;
  };
}

}  // namespace atq::cli
