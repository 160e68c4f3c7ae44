// What `atq evaluate` reports about a classifier: accuracy, per-class accuracy, confusion matrix, and per layer
// the ternary threshold, scales, share of -1/0/+1 and packed bytes against FP32; plus the plots.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/classifier_checkpoint.h"
#include "train/trainer.h"

namespace atq {

// Fashion-MNIST's class names; "0".."9" style names for other data.
std::vector<std::string> ClassNames(const std::string& dataset, int64_t classes);

struct ClassifierReport {
  std::string checkpoint;
  ClassifierConfig config;
  EvalResult eval;
  std::vector<LayerQuantStats> layers;
  int64_t model_packed_bytes = 0;  // quantized layers packed + every other parameter as float32
  int64_t model_fp32_bytes = 0;    // every parameter as float32
  int64_t quantized_layer_packed_bytes = 0;
  int64_t quantized_layer_fp32_bytes = 0;
  int64_t packed_layers = 0;      // layers run from packed weights through atq's kernels
  double seconds = 0;             // the forward passes over the test set
  int64_t peak_resident_bytes = 0;  // the process's VmHWM after them
};

ClassifierReport EvaluateClassifier(const std::string& checkpoint, const LoadedClassifier& loaded,
                                    const ImageTensors& test);
nlohmann::json ClassifierReportJson(const ClassifierReport& report);
std::string FormatClassifierReport(const ClassifierReport& report);

// PNGs in `dir`: accuracy_comparison (this model against `baseline` when given, overall and per class),
// ternary_distribution (share of -1/0/+1 per quantized layer), and, from the checkpoint's metrics.json when
// found, training_curve and sparsity_schedule. Returns the paths written.
std::vector<std::string> WriteClassifierPlots(const std::string& dir, const ClassifierReport& report,
                                              const ClassifierReport* baseline, const nlohmann::json* metrics,
                                              const nlohmann::json* baseline_metrics);

// The metrics.json written by training beside a checkpoint (CHECKPOINT/metrics.json or, for OUT/best, the one in
// OUT); null when there is none.
nlohmann::json FindTrainingMetrics(const std::string& checkpoint);

}  // namespace atq
