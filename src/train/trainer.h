// Training of image classifiers: full precision, or quantization-aware (ternary by Adaptive Ternary
// Quantization, or uniform b-bit, on the grids of grid/weight_grid.h) with progressive sparsity and knowledge
// distillation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/datasets.h"
#include "data/image_data.h"
#include "grid/fake_quant.h"
#include "train/qat_schedule.h"
#include "models/classifier.h"
#include "models/classifier_checkpoint.h"
#include "train/classifier_evaluation.h"

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
  WeightQatOptions qat;
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
  // Data parallel (train/data_parallel.h): every worker draws the same shuffled batches and takes its rows of
  // each; gradients are averaged over the workers (weighted by their rows, so a short last batch is exact),
  // BatchNorm normalizes over each worker's rows (as torch's DDP without SyncBatchNorm) and its running
  // statistics are averaged after every epoch; dropout draws differ per worker. Only rank 0 evaluates and writes.
  // Null: this process alone.
  class DataParallel* parallel = nullptr;
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

// Trains as `options` say, writing OUT/model.safetensors + config.json (the last epoch), OUT/best/ (the best
// epoch by test accuracy) and OUT/metrics.json.
TrainResult Train(const TrainOptions& options);

}  // namespace atq
