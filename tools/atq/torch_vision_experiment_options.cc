// AddVisionExperimentOptions and MakeVisionExperiment.
#include "torch_vision_experiment_options.h"

#include "command.h"

#include "torch/tensor_bridge.h"
#include "train/trainer.h"
#include "util/log.h"

namespace atq::cli {

void AddVisionExperimentOptions(CLI::App& app, VisionExperimentCliOptions& o) {
  AddClassifierOptions(app, o.classifier);
  app.add_option("--calib", o.calibration_images, "Calibration images from the training split")
      ->capture_default_str()
      ->check(CountFrom(1));
  app.add_option("--sensitivity-images", o.sensitivity_images,
                 "Of the calibration images, how many per-layer sensitivity runs on")
      ->capture_default_str()
      ->check(CountFrom(1));
  app.add_option("--seed", o.seed, "Seed choosing the calibration images")->capture_default_str();
  app.add_option("--energy-config", o.energy_config, "YAML/JSON file overriding the energy model's constants");
  app.add_option("--limit", o.limit, "Evaluate on the first N test images only (0: all)")->check(CountFrom(0))->capture_default_str();
}

VisionExperiment MakeVisionExperiment(const VisionExperimentCliOptions& o) {
  SetTorchThreads(o.classifier.threads);
  VisionExperiment experiment;
  const LoadedClassifier first = LoadClassifierFromCli(o.classifier);
  experiment.load = [options = o.classifier]() { return LoadClassifierFromCli(options); };
  experiment.test = LoadTestData(first.config, o.classifier.data_dir, o.limit);
  experiment.calibration = CalibrationImages(first.config, o.classifier.data_dir, o.calibration_images, o.seed);
  experiment.sensitivity_images = o.sensitivity_images;
  if (!o.energy_config.empty()) experiment.energy = LoadEnergyModel(o.energy_config);
  LogInfo("{} ({}): {} test images, {} calibration images (seed {})", o.classifier.checkpoint, first.config.model,
          experiment.test.size(), experiment.calibration.size(0), o.seed);
  return experiment;
}

}  // namespace atq::cli
