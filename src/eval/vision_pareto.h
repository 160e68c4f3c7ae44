// A table of vision recipes measured on one classifier (accuracy, size, energy), the Pareto frontiers of
// accuracy against energy and against size, and the plots a person compares them with.
#pragma once

#include <string>
#include <vector>

#include "eval/vision_experiment.h"

namespace atq {

struct VisionParetoRow {
  VisionOutcome outcome;
  bool energy_frontier = false;  // no other row is at most as costly in energy and at least as accurate
  bool size_frontier = false;    // the same for size
};

// Runs every recipe in order, writing OUT/pareto.json and OUT/pareto.csv after each (an interrupted run keeps
// what it measured), then the frontiers; with `plot`, OUT/accuracy_vs_energy.png and OUT/accuracy_vs_size.png
// (every recipe labelled, the frontier joined), OUT/sensitivity.png for each sensitivity table measured, and
// OUT/bits_<recipe>.png for each mixed-precision recipe (the widths chosen per layer).
std::vector<VisionParetoRow> RunVisionPareto(VisionExperiment& experiment, const std::vector<VisionRecipe>& recipes,
                                             const std::string& model_name, const std::string& out_dir, bool plot);

// The sensitivity table as a bar chart (layers along x, one bar per candidate, log scale) into `png_path`.
void PlotVisionSensitivity(const VisionSensitivity& table, const std::string& title, const std::string& png_path);

}  // namespace atq
