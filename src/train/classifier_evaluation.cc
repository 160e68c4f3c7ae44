// Accuracy, per-class accuracy and the confusion matrix of a classifier on a labelled set.
#include "train/classifier_evaluation.h"

#include <algorithm>

#include <torch/torch.h>

#include "util/error.h"

namespace atq {

EvalResult Evaluate(ClassifierModule& model, const ImageTensors& data, int64_t batch_size) {
  Require(batch_size > 0, "batch size must be positive, got {}", batch_size);
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  EvalResult result;
  result.count = data.size();
  int64_t classes = ClassCount(data.labels);
  std::vector<torch::Tensor> predictions;
  double loss_sum = 0;
  for (int64_t begin = 0; begin < result.count; begin += batch_size) {
    const int64_t length = std::min(batch_size, result.count - begin);
    const torch::Tensor logits = model.forward(data.images.narrow(0, begin, length));  // [B, K]
    const torch::Tensor labels = data.labels.narrow(0, begin, length);
    classes = std::max<int64_t>(classes, logits.size(1));
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    predictions.push_back(logits.argmax(1));
  }
  if (was_training) model.train();
  if (result.count == 0) return result;

  const torch::Tensor predicted = torch::cat(predictions);  // [N]
  // confusion[true][predicted], counted as one bincount over true * K + predicted.
  const torch::Tensor counts =
      torch::bincount(data.labels * classes + predicted, {}, classes * classes).to(torch::kInt64).contiguous();
  const int64_t* count = counts.data_ptr<int64_t>();
  result.confusion.assign(static_cast<size_t>(classes), std::vector<int64_t>(static_cast<size_t>(classes), 0));
  result.per_class_accuracy.assign(static_cast<size_t>(classes), 0.0);
  int64_t correct = 0;
  for (int64_t truth = 0; truth < classes; ++truth) {
    int64_t total = 0;
    for (int64_t guess = 0; guess < classes; ++guess) {
      const int64_t n = count[truth * classes + guess];
      result.confusion[truth][guess] = n;
      total += n;
    }
    const int64_t hits = count[truth * classes + truth];
    correct += hits;
    result.per_class_accuracy[truth] = total > 0 ? static_cast<double>(hits) / static_cast<double>(total) : 0.0;
  }
  result.accuracy = static_cast<double>(correct) / static_cast<double>(result.count);
  result.loss = loss_sum / static_cast<double>(result.count);
  return result;
}

}  // namespace atq
