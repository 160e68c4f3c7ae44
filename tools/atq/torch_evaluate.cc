// atq evaluate CHECKPOINT: test accuracy, per-class accuracy, confusion matrix, per-layer ternary statistics and
// packed size; --visualize draws the plots.
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "eval/classifier_report.h"
#include "io/atomic_file.h"
#include "quant/packed_classifier.h"
#include "torch/tensor_bridge.h"

namespace atq::cli {
namespace {

LoadedClassifier LoadAny(const std::string& path) {
  return IsPackedClassifier(path) ? LoadPackedClassifier(path) : LoadClassifier(path);
}

}  // namespace

RunFn DeclareEvaluate(CLI::App& app) {
  struct Options {
    std::string checkpoint;
    std::string baseline;
    std::string data_dir;
    int64_t limit = 0;
    std::string json_path;
    bool visualize = false;
    std::string plots_dir;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  app.add_option("checkpoint", o->checkpoint, "A checkpoint folder from `atq train`, or a file from `atq export`")
      ->required();
  app.add_option("--baseline", o->baseline, "Also evaluate this checkpoint and compare (e.g. the FP32 model)");
  app.add_option("--data", o->data_dir, "MNIST-format folder (default: the checkpoint's dataset)");
  app.add_option("--limit", o->limit, "Evaluate on the first N test images only");
  app.add_option("--json", o->json_path, "Write the results as JSON here (default: CHECKPOINT/evaluation.json)");
  app.add_flag("--visualize", o->visualize, "Write PNG plots");
  app.add_option("--plots", o->plots_dir, "Folder for the plots (default: CHECKPOINT/plots)");
  app.add_option("--threads", o->threads, "Threads (0: every core)")->capture_default_str();
  return [o] {
    SetTorchThreads(o->threads);
    const LoadedClassifier loaded = LoadAny(o->checkpoint);
    const ImageTensors test = LoadTestData(loaded.config, o->data_dir, o->limit);
    const ClassifierReport report = EvaluateClassifier(o->checkpoint, loaded, test);
    std::cout << FormatClassifierReport(report);
    nlohmann::json json = ClassifierReportJson(report);

    std::optional<ClassifierReport> baseline;
    if (!o->baseline.empty()) {
      const LoadedClassifier base = LoadAny(o->baseline);
      baseline = EvaluateClassifier(o->baseline, base, LoadTestData(base.config, o->data_dir, o->limit));
      fmt::print("baseline {}: {:.2f}%  ->  {}: {:.2f}% ({:+.2f} points), quantized layers {:.2f}x smaller\n",
                 o->baseline, 100 * baseline->eval.accuracy, o->checkpoint, 100 * report.eval.accuracy,
                 100 * (report.eval.accuracy - baseline->eval.accuracy),
                 json["size"]["quantized_layers_compression"].get<double>());
      json["baseline"] = ClassifierReportJson(*baseline);
    }

    const bool is_folder = std::filesystem::is_directory(o->checkpoint);
    const std::filesystem::path home =
        is_folder ? std::filesystem::path(o->checkpoint) : std::filesystem::path(o->checkpoint + ".eval");
    if (o->visualize) {
      const std::string plots = o->plots_dir.empty() ? (home / "plots").string() : o->plots_dir;
      const nlohmann::json metrics = FindTrainingMetrics(o->checkpoint);
      const nlohmann::json baseline_metrics = o->baseline.empty() ? nlohmann::json() : FindTrainingMetrics(o->baseline);
      const auto written = WriteClassifierPlots(plots, report, baseline ? &*baseline : nullptr,
                                                metrics.is_null() ? nullptr : &metrics,
                                                baseline_metrics.is_null() ? nullptr : &baseline_metrics);
      for (const std::string& path : written) fmt::print("plot: {}\n", path);
      json["plots"] = written;
    }
    const std::string json_path =
        o->json_path.empty() ? (is_folder ? (home / "evaluation.json").string() : o->checkpoint + ".eval.json")
                             : o->json_path;
    WriteFileAtomically(json_path, json.dump(2) + "\n");
    fmt::print("results: {}\n", json_path);
    return 0;
  };
}

}  // namespace atq::cli
