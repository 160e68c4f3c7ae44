// atq eval-image-text: every metric of an image-text model (a checkpoint folder, or a packed file run through
// atq's kernels) on held-out wordings, with its size, energy per query and throughput; plots of the confusion
// matrix, the ternary codes per layer, and the comparison with a baseline model.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "eval/image_text_report.h"
#include "io/atomic_file.h"
#include "io/output_path.h"
#include "torch/caching_allocator.h"
#include "torch/tensor_bridge.h"
#include "torch_image_text_options.h"
#include "train/image_text_trainer.h"
#include "util/error.h"

namespace atq::cli {
namespace {

void PrintReport(const std::string& name, const ImageTextReport& r) {
  const ImageTextMetrics& m = r.metrics;
  fmt::print("{}{}\n", name, r.size.packed_kernels ? " (packed kernels)" : "");
  fmt::print("  zero-shot accuracy {:.2f}% | image->text R@1 {:.2f}% R@5 {:.2f}% | text->image R@1 {:.2f}% R@5 "
             "{:.2f}%\n  matching {:.2f}% (hard negatives {:.2f}%) | sparsity {:.3f}\n",
             100 * m.zero_shot_accuracy, 100 * m.image_to_text_recall1, 100 * m.image_to_text_recall5,
             100 * m.text_to_image_recall1, 100 * m.text_to_image_recall5, 100 * m.matching_accuracy,
             100 * m.matching_accuracy_hard, m.sparsity);
  fmt::print("  size: {} quantized layers {} -> {} bytes ({:.1f}x); model {} -> {} bytes | energy per query {:.1f} nJ "
             "| {:.0f} images/s\n",
             r.size.quantized_layers, r.size.quantized_fp32_bytes, r.size.quantized_bytes, r.size.Compression(),
             r.size.model_fp32_bytes, r.size.model_bytes, r.energy_pj / 1000, r.images_per_second);
}

}  // namespace

RunFn DeclareEvalImageText(CLI::App& app) {
  struct Options {
    std::string model, baseline;
    ImageTextDataFlags data;
    bool dequantize = false;
    int64_t test_subset = 0;
    int64_t retrieval_images = 1000;
    int64_t seed = -1;
    int threads = 0;
    std::string energy_config, json_path, confusion_plot, ternary_plot, compare_plot;
  };
  auto o = std::make_shared<Options>();
  app.add_option("MODEL", o->model, "Image-text checkpoint folder or packed file (model.t2.safetensors)")
      ->required();
  app.add_option("--baseline", o->baseline, "A second model to measure beside it (e.g. the full-precision one)");
  AddImageTextDataFlags(app, o->data);
  app.add_flag("--dequantize", o->dequantize, "Run a packed file's layers dequantized instead of the packed kernels");
  app.add_option("--test-subset", o->test_subset, "The first N test images only (0: all)")->check(CountFrom(0));
  app.add_option("--retrieval-images", o->retrieval_images, "Test images for retrieval and matching")
      ->check(CountFrom(1))
      ->capture_default_str();
  app.add_option("--seed", o->seed, "Seed of the held-out captions (default: the model's training seed)");
  app.add_option("--threads", o->threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
  app.add_option("--energy-config", o->energy_config, "YAML/JSON file overriding the energy model's constants");
  app.add_option("--json", o->json_path, "Write every figure as JSON");
  app.add_option("--plot-confusion", o->confusion_plot, "Draw MODEL's zero-shot confusion matrix (PNG)");
  app.add_option("--plot-ternary", o->ternary_plot, "Draw the ternary code shares of MODEL's layers (PNG)");
  app.add_option("--plot-compare", o->compare_plot, "Draw each metric for the baseline and MODEL (PNG)");
  return [o] {
    UseCachingCpuAllocator();
    ImageTextDataFlags data = o->data;
    data.Resolve();
    std::vector<std::string> inputs = data.Inputs();
    inputs.push_back(o->model);
    if (!o->baseline.empty()) inputs.push_back(o->baseline);
    for (const std::string* output : {&o->json_path, &o->confusion_plot, &o->ternary_plot, &o->compare_plot}) {
      if (!output->empty()) CheckOutputPath(*output, inputs, "output");
    }
    Require(o->compare_plot.empty() || !o->baseline.empty(), "--plot-compare needs --baseline");
    SetTorchThreads(o->threads);
    const EnergyModel energy = o->energy_config.empty() ? EnergyModel() : LoadEnergyModel(o->energy_config);
    const ImageTextData loaded_data =
        LoadImageTextData(data.data_dir, data.caption_file, data.tokenizer_dir, /*subset=*/1, o->test_subset);
    const PackedRun run = o->dequantize ? PackedRun::kDequantized : PackedRun::kKernels;
    const auto measure = [&](const std::string& path) {
      nlohmann::json config;
      ImageTextModel model = LoadImageTextAny(path, run, &config);
      uint64_t seed = 0;
      if (o->seed >= 0) {
        seed = static_cast<uint64_t>(o->seed);
      } else if (config.contains("training") && config["training"].contains("seed")) {
        seed = config["training"]["seed"].get<uint64_t>();
      }
      ImageTextReport report = ReportImageText(*model, loaded_data, seed, o->retrieval_images, energy);
      PrintReport(path, report);
      return report;
    };
    const ImageTextReport report = measure(o->model);
    nlohmann::json json = {{"model", o->model}, {"report", report.ToJson()}};
    if (!o->baseline.empty()) {
      const ImageTextReport baseline = measure(o->baseline);
      json["baseline"] = {{"model", o->baseline}, {"report", baseline.ToJson()}};
      fmt::print("against the baseline: zero-shot {:+.2f} points, matching {:+.2f} points; quantized layers "
                 "{:.1f}x smaller, energy per query {:.1f}x lower\n",
                 100 * (report.metrics.zero_shot_accuracy - baseline.metrics.zero_shot_accuracy),
                 100 * (report.metrics.matching_accuracy - baseline.metrics.matching_accuracy),
                 report.size.Compression(),
                 report.energy_pj > 0 ? baseline.energy_pj / report.energy_pj : 1.0);
      if (!o->compare_plot.empty()) {
        PlotImageTextComparison({{"baseline", baseline.metrics}, {"model", report.metrics}}, o->compare_plot);
      }
    }
    if (!o->confusion_plot.empty()) {
      PlotZeroShotConfusion(report.metrics, loaded_data.captions->class_names, "zero-shot confusion: " + o->model,
                            o->confusion_plot);
    }
    if (!o->ternary_plot.empty()) {
      Require(!report.size.layers.empty(), "{}: no quantized layers to plot (--plot-ternary)", o->model);
      PlotTernaryDistribution(report.size.layers, o->ternary_plot);
    }
    if (!o->json_path.empty()) WriteFileAtomically(o->json_path, json.dump(2) + "\n");
    return 0;
  };
}

}  // namespace atq::cli
