// Options `atq ptq`, `atq sensitivity` and `atq pareto` share beyond the checkpoint: calibration images,
// sensitivity images, the energy model and the test subset; and the experiment they set up.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "eval/vision_experiment.h"
#include "torch_classifier_options.h"

namespace atq::cli {

struct VisionExperimentCliOptions {
  ClassifierCliOptions classifier;
  int64_t calibration_images = 512;
  int64_t sensitivity_images = 256;
  uint64_t seed = 0;
  std::string energy_config;
  int64_t limit = 0;  // test images (0: all)
};

// Adds the classifier options and --calib/--sensitivity-images/--seed/--energy-config/--limit.
void AddVisionExperimentOptions(CLI::App& app, VisionExperimentCliOptions& options);

// Sets the threads, loads the test split and the calibration images, reads the energy model, and logs them.
VisionExperiment MakeVisionExperiment(const VisionExperimentCliOptions& options);

}  // namespace atq::cli
