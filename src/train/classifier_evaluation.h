// Evaluation of an image classifier on a labelled set: accuracy, loss, per-class accuracy, confusion matrix.
#pragma once

#include <cstdint>
#include <vector>

#include "data/image_data.h"
#include "models/classifier.h"

namespace atq {

struct EvalResult {
  int64_t count = 0;
  double accuracy = 0;                         // share of correct predictions, 0..1
  double loss = 0;                             // mean cross-entropy
  std::vector<double> per_class_accuracy;      // [classes], 0 for a class without test images
  std::vector<std::vector<int64_t>> confusion;  // [true class][predicted class] counts
};

// Accuracy, per-class accuracy and confusion matrix of `model` on `data`, in eval mode without gradients (the
// model's train/eval mode is restored afterwards).
EvalResult Evaluate(ClassifierModule& model, const ImageTensors& data, int64_t batch_size = 1000);

}  // namespace atq
