// Evaluation report of a classifier checkpoint, as JSON, as text and as plots.
#include "eval/classifier_report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "models/quant_layers.h"
#include "report/plot.h"
#include "util/error.h"
#include "util/memory.h"
#include "io/strict_json.h"

namespace atq {
namespace {

namespace fs = std::filesystem;

std::string PercentText(double share) { return fmt::format("{:.2f}%", 100 * share); }

}  // namespace

std::vector<std::string> ClassNames(const std::string& dataset, int64_t classes) {
  if (dataset == "fashion_mnist" && classes == 10) {
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  }
  std::vector<std::string> names;
  for (int64_t c = 0; c < classes; ++c) names.push_back(std::to_string(c));
  return names;
}

ClassifierReport EvaluateClassifier(const std::string& checkpoint, const LoadedClassifier& loaded,
                                    const ImageTensors& test) {
  ClassifierReport report;
  report.checkpoint = checkpoint;
  report.config = loaded.config;
  const auto start = std::chrono::steady_clock::now();
  report.eval = Evaluate(*loaded.model, test);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.peak_resident_bytes = PeakResidentBytes();
  for (const auto& [name, layer] : loaded.model->QuantLayers()) {
    const auto* weight_layer = dynamic_cast<const QuantWeightLayer*>(layer);
    report.packed_layers += weight_layer != nullptr && weight_layer->RunsPackedKernels();
    LayerQuantStats stats = layer->Stats(name);
    if (layer->quant_config().quantized) {
      report.quantized_layer_packed_bytes += stats.packed_bytes;
      report.quantized_layer_fp32_bytes += stats.fp32_bytes;
    }
    report.model_packed_bytes += stats.packed_bytes;
    report.layers.push_back(std::move(stats));
  }
  // Parameters outside the weight layers (BatchNorm, embeddings) are stored as float32 either way.
  int64_t all_parameters = 0;
  for (const auto& parameter : loaded.model->named_parameters()) all_parameters += parameter.value().numel();
  int64_t layer_parameters = 0;
  for (const LayerQuantStats& stats : report.layers) layer_parameters += stats.fp32_bytes / 4;
  report.model_fp32_bytes = all_parameters * 4;
  report.model_packed_bytes += (all_parameters - layer_parameters) * 4;
  return report;
}

nlohmann::json ClassifierReportJson(const ClassifierReport& report) {
  const std::vector<std::string> names = ClassNames(report.config.dataset, report.config.classes);
  nlohmann::json per_class = nlohmann::json::object();
  for (size_t c = 0; c < report.eval.per_class_accuracy.size(); ++c) {
    per_class[c < names.size() ? names[c] : std::to_string(c)] = report.eval.per_class_accuracy[c];
  }
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerQuantStats& s : report.layers) {
    layers.push_back({{"name", s.name},
                      {"weights", s.weights},
                      {"threshold", std::isnan(s.threshold) ? nlohmann::json() : nlohmann::json(s.threshold)},
                      {"scales", s.scales},
                      {"share_minus_one", s.share_minus},
                      {"share_zero", s.share_zero},
                      {"share_plus_one", s.share_plus},
                      {"rpb_weights", s.rpb_weights},
                      {"packed_bytes", s.packed_bytes},
                      {"fp32_bytes", s.fp32_bytes}});
  }
  const auto ratio = [](int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / b : 0.0; };
  return {{"checkpoint", report.checkpoint},
          {"model", report.config.model},
          {"dataset", report.config.dataset},
          {"test_images", report.eval.count},
          {"accuracy", report.eval.accuracy},
          {"loss", report.eval.loss},
          {"per_class_accuracy", per_class},
          {"confusion_matrix", report.eval.confusion},
          {"layers", layers},
          {"runtime",
           {{"packed_layers", report.packed_layers},
            {"seconds", report.seconds},
            {"images_per_second", report.seconds > 0 ? report.eval.count / report.seconds : 0.0},
            {"peak_resident_bytes", report.peak_resident_bytes}}},
          {"size",
           {{"model_packed_bytes", report.model_packed_bytes},
            {"model_fp32_bytes", report.model_fp32_bytes},
            {"model_compression", ratio(report.model_fp32_bytes, report.model_packed_bytes)},
            {"quantized_layers_packed_bytes", report.quantized_layer_packed_bytes},
            {"quantized_layers_fp32_bytes", report.quantized_layer_fp32_bytes},
            {"quantized_layers_compression",
             ratio(report.quantized_layer_fp32_bytes, report.quantized_layer_packed_bytes)}}}};
}

std::string FormatClassifierReport(const ClassifierReport& report) {
  const std::vector<std::string> names = ClassNames(report.config.dataset, report.config.classes);
  std::string out = fmt::format("{} ({} on {}): test accuracy {} on {} images, loss {:.4f}\n", report.checkpoint,
                                report.config.model, report.config.dataset, PercentText(report.eval.accuracy),
                                report.eval.count, report.eval.loss);
  out += "per class:";
  for (size_t c = 0; c < report.eval.per_class_accuracy.size(); ++c) {
    out += fmt::format("  {} {}", c < names.size() ? names[c] : std::to_string(c),
                       PercentText(report.eval.per_class_accuracy[c]));
  }
  out += "\nconfusion matrix (rows: true class, columns: predicted):\n";
  for (const auto& row : report.eval.confusion) {
    for (int64_t count : row) out += fmt::format("{:>6}", count);
    out += "\n";
  }
  out += fmt::format("{:<18} {:>9} {:>10} {:>10} {:>7} {:>7} {:>7} {:>6} {:>11} {:>11}\n", "layer", "weights",
                     "threshold", "mean scale", "-1", "0", "+1", "rpb", "packed B", "fp32 B");
  for (const LayerQuantStats& s : report.layers) {
    double mean_scale = 0;
    for (float scale : s.scales) mean_scale += scale;
    if (!s.scales.empty()) mean_scale /= static_cast<double>(s.scales.size());
    const std::string threshold = std::isnan(s.threshold) ? "-" : fmt::format("{:.4g}", s.threshold);
    out += fmt::format("{:<18} {:>9} {:>10} {:>10.4g} {:>7.3f} {:>7.3f} {:>7.3f} {:>6} {:>11} {:>11}\n", s.name,
                       s.weights, threshold, mean_scale, s.share_minus, s.share_zero, s.share_plus, s.rpb_weights,
                       s.packed_bytes, s.fp32_bytes);
  }
  const auto ratio = [](int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / b : 0.0; };
  out += fmt::format("quantized layers: {} bytes packed vs {} fp32 ({:.2f}x smaller)\n",
                     report.quantized_layer_packed_bytes, report.quantized_layer_fp32_bytes,
                     ratio(report.quantized_layer_fp32_bytes, report.quantized_layer_packed_bytes));
  out += fmt::format("whole model: {} bytes vs {} fp32 ({:.2f}x smaller)\n", report.model_packed_bytes,
                     report.model_fp32_bytes, ratio(report.model_fp32_bytes, report.model_packed_bytes));
  out += fmt::format("inference: {} images in {:.2f} s ({:.0f} images/s), {} of {} layers packed through atq's "
                     "kernels, peak resident {:.1f} MB\n",
                     report.eval.count, report.seconds, report.seconds > 0 ? report.eval.count / report.seconds : 0.0,
                     report.packed_layers, report.layers.size(), report.peak_resident_bytes / 1e6);
  return out;
}

nlohmann::json FindTrainingMetrics(const std::string& checkpoint) {
  fs::path dir = fs::is_directory(checkpoint) ? fs::path(checkpoint) : fs::path(checkpoint).parent_path();
  for (const fs::path& candidate : {dir / "metrics.json", dir.parent_path() / "metrics.json"}) {
    if (!fs::is_regular_file(candidate)) continue;
    return ReadStrictJsonFile(candidate.string());
  }
  return nullptr;
}

std::vector<std::string> WriteClassifierPlots(const std::string& dir, const ClassifierReport& report,
                                              const ClassifierReport* baseline, const nlohmann::json* metrics,
                                              const nlohmann::json* baseline_metrics) {
  fs::create_directories(dir);
  std::vector<std::string> written;
  const auto render = [&](const PlotSpec& spec, const std::string& name) {
    const std::string path = (fs::path(dir) / (name + ".png")).string();
    RenderPlot(spec, path);
    written.push_back(path);
  };
  const std::string label = report.config.model + " " +
                            (report.quantized_layer_fp32_bytes > 0 ? std::string("quantized") : std::string("fp32"));

  PlotSpec accuracy;
  accuracy.title = "Test accuracy, overall and per class";
  accuracy.y_label = "accuracy (%)";
  accuracy.categories = {"overall"};
  for (const std::string& name : ClassNames(report.config.dataset, report.config.classes)) {
    accuracy.categories.push_back(name);
  }
  const auto accuracy_series = [](const std::string& title, const EvalResult& eval) {
    PlotSeries series{title, {}, {100 * eval.accuracy}};
    for (double share : eval.per_class_accuracy) series.y.push_back(100 * share);
    return series;
  };
  const auto short_name = [](const std::string& path) { return fs::path(path).filename().string(); };
  if (baseline != nullptr) {
    accuracy.series.push_back(accuracy_series("baseline: " + short_name(baseline->checkpoint), baseline->eval));
  }
  accuracy.series.push_back(accuracy_series(label + ": " + short_name(report.checkpoint), report.eval));
  render(accuracy, "accuracy_comparison");

  PlotSpec distribution;
  distribution.title = "Ternary weights per layer";
  distribution.y_label = "share of weights";
  PlotSeries minus{"-1", {}, {}}, zero{"0", {}, {}}, plus{"+1", {}, {}};
  for (const auto& [name, config] : report.config.layers) {
    if (config.mode() != WeightMode::kTernary) continue;
    const auto stats = std::find_if(report.layers.begin(), report.layers.end(),
                                    [&](const LayerQuantStats& s) { return s.name == name; });
    if (stats == report.layers.end()) continue;
    const LayerQuantStats& s = *stats;
    distribution.categories.push_back(s.name);
    minus.y.push_back(s.share_minus);
    zero.y.push_back(s.share_zero);
    plus.y.push_back(s.share_plus);
  }
  if (!distribution.categories.empty()) {
    distribution.series = {minus, zero, plus};
    render(distribution, "ternary_distribution");
  }

  const auto epoch_series = [](const std::string& title, const nlohmann::json& json, const char* key, double scale) {
    PlotSeries series{title, {}, {}};
    for (const auto& epoch : json.at("epochs")) {
      series.x.push_back(epoch.at("epoch").get<double>());
      series.y.push_back(scale * epoch.at(key).get<double>());
    }
    return series;
  };
  if (metrics != nullptr && metrics->is_object() && metrics->contains("epochs")) {
    PlotSpec curve;
    curve.title = "Training curve";
    curve.x_label = "epoch";
    curve.y_label = "accuracy (%)";
    curve.series = {epoch_series(label + " train", *metrics, "train_acc", 100),
                    epoch_series(label + " test", *metrics, "test_acc", 100)};
    if (baseline_metrics != nullptr && baseline_metrics->is_object() && baseline_metrics->contains("epochs")) {
      curve.series.push_back(epoch_series("baseline train", *baseline_metrics, "train_acc", 100));
      curve.series.push_back(epoch_series("baseline test", *baseline_metrics, "test_acc", 100));
    }
    render(curve, "training_curve");
    PlotSpec schedule;
    schedule.title = "Sparsity of the ternary layers during training";
    schedule.x_label = "epoch";
    schedule.y_label = "share of zero weights";
    schedule.series = {epoch_series(label, *metrics, "sparsity", 1)};
    render(schedule, "sparsity_schedule");
  }
  return written;
}

}  // namespace atq
