// atq evaluate CHECKPOINT: test accuracy, per-class accuracy, confusion matrix, per-layer ternary statistics and
// packed size, images/s and peak memory; --visualize draws the plots. --arch or --config evaluate another library's
// safetensors file. A packed file from `atq export` runs through atq's packed kernels (--dequantize: in float).
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "eval/classifier_report.h"
#include "io/atomic_file.h"
#include "torch/caching_allocator.h"
#include "torch/tensor_bridge.h"
#include "torch_classifier_options.h"
#include "io/output_path.h"
#include "util/error.h"

namespace atq::cli {
RunFn DeclareEvaluate(CLI::App& app) {
  struct Options {
    ClassifierCliOptions classifier;
    std::string baseline;
    int64_t limit = 0;
    std::string json_path;
    bool visualize = false;
    bool dequantize = false;
    std::string plots_dir;
  };
  auto o = std::make_shared<Options>();
  AddClassifierOptions(app, o->classifier);
  app.add_option("--baseline", o->baseline, "Also evaluate this checkpoint and compare (e.g. the FP32 model)");
  app.add_option("--limit", o->limit, "Evaluate on the first N test images only")->check(CountFrom(0));
  app.add_option("--json", o->json_path, "Write the results as JSON here (nothing is written unless asked)");
  app.add_flag("--visualize", o->visualize, "Write PNG plots");
  app.add_flag("--dequantize", o->dequantize,
               "A packed file runs dequantized to float32 (the fake-quantized model's arithmetic) instead of "
               "through atq's packed kernels");
  app.add_option("--plots", o->plots_dir, "Folder for the plots (--visualize needs it)");
  return [o] {
    // Results go where the options say, never into the checkpoint's own folder by default.
    if (o->visualize && o->plots_dir.empty()) throw UsageError("--visualize needs --plots DIR");
    const std::vector<std::string> inputs = {o->classifier.checkpoint, o->baseline};
    if (!o->json_path.empty()) CheckOutputPath(o->json_path, inputs, "--json");
    if (!o->plots_dir.empty()) CheckOutputPath(o->plots_dir, inputs, "--plots");
    SetTorchThreads(o->classifier.threads);
    UseCachingCpuAllocator();  // a batch's activations reuse freed blocks instead of fresh pages
    o->classifier.packed_run = o->dequantize ? PackedRun::kDequantized : PackedRun::kKernels;
    const LoadedClassifier loaded = LoadClassifierFromCli(o->classifier);
    const ImageTensors test = LoadTestData(loaded.config, o->classifier.data_dir, o->limit);
    const ClassifierReport report = EvaluateClassifier(o->classifier.checkpoint, loaded, test);
    std::cout << FormatClassifierReport(report);
    nlohmann::json json = ClassifierReportJson(report);

    std::optional<ClassifierReport> baseline;
    if (!o->baseline.empty()) {
      ClassifierCliOptions base_options;
      base_options.checkpoint = o->baseline;
      const LoadedClassifier base = LoadClassifierFromCli(base_options);
      baseline = EvaluateClassifier(o->baseline, base, LoadTestData(base.config, o->classifier.data_dir, o->limit));
      fmt::print("baseline {}: {:.2f}%  ->  {}: {:.2f}% ({:+.2f} points), quantized layers {:.2f}x smaller\n",
                 o->baseline, 100 * baseline->eval.accuracy, o->classifier.checkpoint, 100 * report.eval.accuracy,
                 100 * (report.eval.accuracy - baseline->eval.accuracy),
                 json["size"]["quantized_layers_compression"].get<double>());
      json["baseline"] = ClassifierReportJson(*baseline);
    }

    if (o->visualize) {
      const std::string& plots = o->plots_dir;
      const nlohmann::json metrics = FindTrainingMetrics(o->classifier.checkpoint);
      const nlohmann::json baseline_metrics = o->baseline.empty() ? nlohmann::json() : FindTrainingMetrics(o->baseline);
      const auto written = WriteClassifierPlots(plots, report, baseline ? &*baseline : nullptr,
                                                metrics.is_null() ? nullptr : &metrics,
                                                baseline_metrics.is_null() ? nullptr : &baseline_metrics);
      for (const std::string& path : written) fmt::print("plot: {}\n", path);
      json["plots"] = written;
    }
    if (!o->json_path.empty()) {
      WriteFileAtomically(o->json_path, json.dump(2) + "\n");
      fmt::print("results: {}\n", o->json_path);
    }
    return 0;
  };
}

}  // namespace atq::cli
