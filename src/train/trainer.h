// Training and evaluation of image classifiers: full precision, or quantization-aware (ternary by Adaptive
// Ternary Quantization, or uniform b-bit) with progressive sparsity and knowledge distillation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "models/classifier.h"
#include "quant/ternary.h"
#include "train/classifier_checkpoint.h"
#include "train/data.h"

namespace atq {

struct TrainOptions {
  std::string dataset = "fashion_mnist";  // "fashion_mnist", "mnist", or any name when data_dir is given
  std::string data_dir;                   // an MNIST-format folder; empty: the dataset's default folder
  std::string model = "cnn";              // a MakeClassifier name
  int64_t batch_size = 256;
  int epochs = 10;
  double learning_rate = 1e-3;  // peak; cosine-annealed per step to 0 over the run
  double weight_decay = 0;      // AdamW's decoupled decay, on weights only (not biases or BatchNorm)

  // Quantization of the weight layers (all of them but the first and last unless quantize_first_last).
  WeightMode mode = WeightMode::kFull;
  int bits = 4;                   // kUniform
  double sparsity = 0.5;          // kSparsity target, reached after ramp_epochs
  int ramp_epochs = 0;            // progressive sparsity: 0 -> sparsity over these epochs (0: from the start)
  SparsityRamp ramp = SparsityRamp::kLinear;
  ThresholdMode threshold_mode = ThresholdMode::kSparsity;
  double magnitude = 0.7;         // kMagnitude* cutoff
  bool per_channel = true;
  double rpb_fraction = 0;        // residual precision boosting
  bool quantize_first_last = false;

  std::string init_from;  // a checkpoint (folder) of the same model to start from, e.g. the FP model for QAT

  // Knowledge distillation: a full-precision teacher checkpoint (folder), or a safetensors file of the student's
  // architecture without config.json beside it (another library's weights); empty for none.
  std::string distill_teacher;
  double temperature = 4.0;
  double distill_alpha = 0.7;  // weight of the soft (teacher) term; 1 - alpha on the labels

  uint64_t seed = 1;
  bool augment = false;     // random 2-pixel-padded crop + horizontal flip
  int64_t subset = 0;       // train on the first N training images (0: all)
  int64_t test_subset = 0;  // evaluate on the first N test images (0: all)
  int threads = 0;          // torch intra-op threads; 0: every core
  std::string out_dir;      // checkpoint, config.json, metrics.json; empty: nothing written
  bool show_progress = true;
};

struct EvalResult {
  int64_t count = 0;
  double accuracy = 0;                         // share of correct predictions, 0..1
  double loss = 0;                             // mean cross-entropy
  std::vector<double> per_class_accuracy;      // [classes], 0 for a class without test images
  std::vector<std::vector<int64_t>> confusion;  // [true class][predicted class] counts
};

struct EpochMetrics {
  int epoch = 0;  // 1-based
  double loss = 0;            // mean training loss (distillation loss when distilling)
  double train_accuracy = 0;  // on the training batches as seen (augmented, train mode)
  double test_accuracy = 0;
  double sparsity = 0;        // zero share over the ternary layers' weights after the epoch
  double learning_rate = 0;   // at the epoch's last step
  double seconds = 0;         // training and test evaluation
};

struct TrainResult {
  std::shared_ptr<ClassifierModule> model;  // after the last epoch, eval mode
  ClassifierConfig config;
  std::vector<EpochMetrics> epochs;
  int best_epoch = 0;  // 1-based, by test accuracy
  double best_test_accuracy = 0;
  EvalResult final_eval;  // the last epoch's model on the test set
};

// The folder a dataset name stands for when no --data folder is given; throws atq::Error for a name without one.
std::string DefaultDataDir(const std::string& dataset);

// Train and test splits as normalized tensors: Fashion-MNIST uses kFashionMnistNormalization, other data the
// training split's own mean and std. `subset`/`test_subset` keep the first N images (0: all).
struct TrainingData {
  ImageTensors train;
  ImageTensors test;
  int64_t classes = 0;
  int64_t image_size = 0;
};
TrainingData LoadTrainingData(const std::string& dataset, const std::string& data_dir, int64_t subset = 0,
                              int64_t test_subset = 0);

// The test split of a checkpoint's dataset, normalized as the checkpoint was trained.
ImageTensors LoadTestData(const ClassifierConfig& config, const std::string& data_dir = "", int64_t limit = 0);

// Trains as `options` say, writing OUT/model.safetensors + config.json (the last epoch), OUT/best/ (the best
// epoch by test accuracy) and OUT/metrics.json.
TrainResult Train(const TrainOptions& options);

// Accuracy, per-class accuracy and confusion matrix of `model` on `data`, in eval mode without gradients (the
// model's train/eval mode is restored afterwards).
EvalResult Evaluate(ClassifierModule& model, const ImageTensors& data, int64_t batch_size = 1000);

// Mean over the batch of KL(softmax(teacher / T) || softmax(student / T)). logits: [B, classes].
torch::Tensor SoftTargetKl(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                           double temperature);

// alpha * T^2 * SoftTargetKl + (1 - alpha) * cross-entropy(student, labels) (Hinton et al. 2015: T^2 keeps the
// soft term's gradient scale independent of T).
torch::Tensor DistillationLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                               const torch::Tensor& labels, double temperature, double alpha);

}  // namespace atq
