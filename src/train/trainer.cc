// The training loop (AdamW, cosine learning rate, scheduled sparsity, distillation) and its outputs.
#include "train/trainer.h"

#include "train/distillation.h"
#include "train/optimizer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/atomic_file.h"
#include "models/classifiers.h"
#include "train/data_parallel.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"

namespace atq {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

nlohmann::json OptionsToJson(const TrainOptions& options) {
  nlohmann::json json = {{"dataset", options.dataset},
          {"data_dir", options.data_dir},
          {"model", options.model},
          {"batch_size", options.batch_size},
          {"epochs", options.epochs},
          {"learning_rate", options.learning_rate},
          {"weight_decay", options.weight_decay},
          {"quantize_first_last", options.quantize_first_last},
          {"init_from", options.init_from},
          {"distill_teacher", options.distill_teacher},
          {"temperature", options.temperature},
          {"distill_alpha", options.distill_alpha},
          {"seed", options.seed},
          {"augment", options.augment},
          {"subset", options.subset},
          {"test_subset", options.test_subset},
          {"threads", options.threads}};
  json.update(options.qat.ToJson());
  return json;
}

nlohmann::json EvalToJson(const EvalResult& eval) {
  return {{"count", eval.count},
          {"accuracy", eval.accuracy},
          {"loss", eval.loss},
          {"per_class_accuracy", eval.per_class_accuracy},
          {"confusion", eval.confusion}};
}

nlohmann::json MetricsJson(const TrainOptions& options, const std::vector<EpochMetrics>& epochs, int best_epoch,
                           double best_accuracy, const EvalResult* final_eval) {
  nlohmann::json per_epoch = nlohmann::json::array();
  double seconds = 0;
  for (const EpochMetrics& epoch : epochs) {
    per_epoch.push_back({{"epoch", epoch.epoch},
                         {"loss", epoch.loss},
                         {"train_acc", epoch.train_accuracy},
                         {"test_acc", epoch.test_accuracy},
                         {"sparsity", epoch.sparsity},
                         {"learning_rate", epoch.learning_rate},
                         {"seconds", epoch.seconds}});
    seconds += epoch.seconds;
  }
  nlohmann::json json = {{"epochs", std::move(per_epoch)},
                         {"best", {{"epoch", best_epoch}, {"test_acc", best_accuracy}}},
                         {"seconds_per_epoch", epochs.empty() ? 0.0 : seconds / epochs.size()},
                         {"threads", torch::get_num_threads()},
                         {"options", OptionsToJson(options)}};
  if (final_eval != nullptr) json["final"] = EvalToJson(*final_eval);
  return json;
}

void ValidateOptions(const TrainOptions& options) {
  Require(options.batch_size > 0, "batch size must be positive, got {}", options.batch_size);
  Require(options.epochs > 0, "epochs must be positive, got {}", options.epochs);
  Require(options.learning_rate > 0, "learning rate must be positive, got {}", options.learning_rate);
  Require(options.weight_decay >= 0, "weight decay must be >= 0, got {}", options.weight_decay);
  options.qat.Validate();
  Require(options.temperature > 0, "distillation temperature must be positive, got {}", options.temperature);
  Require(options.distill_alpha >= 0 && options.distill_alpha <= 1, "distillation weight must be in [0, 1], got {}",
          options.distill_alpha);
}

}  // namespace

TrainResult Train(const TrainOptions& options) {
  ValidateOptions(options);
  SetTorchThreads(options.threads);
  torch::manual_seed(options.seed);

  const TrainingData data = LoadTrainingData(options.dataset, options.data_dir, options.subset, options.test_subset);

  TrainResult result;
  ClassifierConfig& config = result.config;
  config.model = options.model;
  config.in_channels = data.train.images.size(1);
  config.classes = data.classes;
  config.image_size = data.image_size;
  config.dataset = options.dataset;
  config.normalization = data.train.normalization;

  std::shared_ptr<ClassifierModule> model =
      MakeClassifier(config.model, config.in_channels, config.classes, config.image_size, config.patch_size);
  if (!options.init_from.empty()) {
    const std::filesystem::path init(options.init_from);
    std::error_code error;
    LoadClassifierWeights(*model, std::filesystem::is_directory(init, error)
                                      ? (init / "model.safetensors").string()
                                      : options.init_from);
  }
  ApplyQuantConfig(*model, QatLayerConfig(options.qat), options.quantize_first_last);
  result.model = model;

  std::shared_ptr<ClassifierModule> teacher;
  if (!options.distill_teacher.empty()) {
    // An atq checkpoint, or another library's weights file of the student's architecture (e.g. the model the
    // student starts from with --init).
    LoadedClassifier loaded = LoadClassifierOrWeights(options.distill_teacher, config);
    Require(loaded.config.classes == config.classes, "{}: the teacher has {} classes, the data {}",
            options.distill_teacher, loaded.config.classes, config.classes);
    Require(loaded.config.image_size == config.image_size && loaded.config.in_channels == config.in_channels,
            "{}: the teacher takes {}x{}x{} images, the data has {}x{}x{}", options.distill_teacher,
            loaded.config.in_channels, loaded.config.image_size, loaded.config.image_size, config.in_channels,
            config.image_size, config.image_size);
    if (std::abs(loaded.config.normalization.mean - config.normalization.mean) > 1e-6 ||
        std::abs(loaded.config.normalization.std - config.normalization.std) > 1e-6) {
      LogWarn("{}: the teacher was trained with normalization mean {} std {}, the student uses {} {}",
              options.distill_teacher, loaded.config.normalization.mean, loaded.config.normalization.std,
              config.normalization.mean, config.normalization.std);
    }
    teacher = loaded.model;
    teacher->eval();
  }

  DataParallel* parallel = options.parallel;
  const bool writes = !options.out_dir.empty() && (!parallel || parallel->writes());
  std::vector<torch::Tensor> running_statistics;  // BatchNorm's, averaged over the workers after every epoch
  for (const torch::Tensor& buffer : model->buffers()) {
    if (buffer.is_floating_point()) running_statistics.push_back(buffer);
  }
  if (parallel) {
    std::vector<torch::Tensor> state = model->parameters();
    for (const torch::Tensor& buffer : model->buffers()) state.push_back(buffer);
    parallel->BroadcastFromFirst(state);  // one starting point
    // Each worker's own dropout draws (the weights are rank 0's already).
    torch::manual_seed(MixSeed(options.seed, 0x5EED0000u + static_cast<uint64_t>(parallel->rank())));
  }
  const auto optimizer = MakeAdamW(model->parameters(), options.learning_rate, options.weight_decay);

  const int64_t batches_per_epoch = (data.train.size() + options.batch_size - 1) / options.batch_size;
  const int64_t total_steps = batches_per_epoch * options.epochs;

  int64_t parameters = 0;
  for (const torch::Tensor& parameter : model->parameters()) parameters += parameter.numel();
  LogInfo("train {} ({} parameters, {} weights) on {}: {} training / {} test images, {} epochs of {} batches, "
          "{} threads",
          options.model, parameters, WeightModeName(options.qat.mode), options.dataset, data.train.size(),
          data.test.size(), options.epochs, batches_per_epoch, torch::get_num_threads());

  const std::filesystem::path out_dir(options.out_dir);
  const nlohmann::json training_json = {{"training", OptionsToJson(options)}};
  int64_t step = 0;
  double learning_rate = options.learning_rate;
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    const auto epoch_start = std::chrono::steady_clock::now();
    model->train();
    const EpochBatches batches(data.train, options.batch_size, MixSeed(options.seed, static_cast<uint64_t>(epoch)),
                               /*shuffle=*/true, options.augment);
    std::unique_ptr<Progress> progress;
    if (options.show_progress && (!parallel || parallel->writes())) {
      progress = std::make_unique<Progress>(fmt::format("epoch {}/{}", epoch + 1, options.epochs),
                                            batches.size(), "batches");
    }
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t index = 0; index < batches.size(); ++index, ++step) {
      // Cosine annealing per step, and the sparsity ramp per step too (the threshold is recomputed at every
      // forward anyway), reaching the target at the end of epoch ramp_epochs.
      learning_rate = WarmupCosineLearningRate(step, total_steps, /*warmup=*/0, options.learning_rate);
      SetLearningRate(*optimizer, learning_rate);
      ScheduleSparsity(options.qat, model->QuantLayers(),
                       static_cast<double>(step + 1) / static_cast<double>(batches_per_epoch));
      Batch batch = batches.Get(index);
      const int64_t global_rows = batch.labels.size(0);
      if (parallel) {  // this worker's rows; shares differ by at most one
        const auto [begin, end] = WorkerShare(global_rows, parallel->rank(), parallel->world_size());
        batch.images = batch.images.slice(0, begin, end);
        batch.labels = batch.labels.slice(0, begin, end);
      }
      const int64_t size = batch.labels.size(0);
      optimizer->zero_grad();
      double batch_loss = 0;
      if (size > 0) {
        const torch::Tensor logits = model->forward(batch.images);  // [B, K]
        torch::Tensor loss;
        if (teacher) {
          torch::Tensor teacher_logits;
          {
            torch::NoGradGuard no_grad;
            teacher_logits = teacher->forward(batch.images);
          }
          loss = DistillationLoss(logits, teacher_logits, batch.labels, options.temperature, options.distill_alpha);
        } else {
          loss = torch::nn::functional::cross_entropy(logits, batch.labels);
        }
        // Weighted by this worker's share of the batch, so that the workers' mean gradient is the whole batch's.
        const double share = parallel ? static_cast<double>(size * parallel->world_size()) / global_rows : 1.0;
        (share == 1.0 ? loss : loss * share).backward();
        batch_loss = loss.item<double>();
        loss_sum += batch_loss * static_cast<double>(size);
        correct += logits.detach().argmax(1).eq(batch.labels).sum().item<int64_t>();
        seen += size;
      }
      if (parallel) parallel->AverageGradients(model->parameters());
      optimizer->step();
      if (progress) progress->Advance(1, fmt::format("loss {:.4f}", batch_loss));
    }
    if (parallel) {
      const std::vector<double> sums =
          parallel->Sum({loss_sum, static_cast<double>(correct), static_cast<double>(seen)});
      loss_sum = sums[0];
      correct = static_cast<int64_t>(sums[1]);
      seen = static_cast<int64_t>(sums[2]);
      parallel->Average(running_statistics);
    }

    EpochMetrics metrics;
    metrics.epoch = epoch + 1;
    metrics.loss = loss_sum / static_cast<double>(seen);
    metrics.train_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    metrics.learning_rate = learning_rate;
    if (parallel && !parallel->writes()) {  // rank 0 evaluates, keeps the best and writes
      result.epochs.push_back(metrics);
      continue;
    }
    const EvalResult eval = Evaluate(*model, data.test);
    metrics.test_accuracy = eval.accuracy;
    metrics.sparsity = MeasuredSparsity(model->QuantLayers());
    metrics.seconds = Seconds(epoch_start);
    result.epochs.push_back(metrics);
    const std::string summary =
        fmt::format("loss {:.4f} | train {:.2f}% | test {:.2f}% | sparsity {:.3f} | {:.1f}s", metrics.loss,
                    100 * metrics.train_accuracy, 100 * metrics.test_accuracy, metrics.sparsity, metrics.seconds);
    if (progress) {
      progress->Finish(summary);
    } else {
      LogDebug("epoch {}/{}: {}", epoch + 1, options.epochs, summary);
    }

    const bool best = metrics.test_accuracy > result.best_test_accuracy || result.best_epoch == 0;
    if (best) {
      result.best_epoch = metrics.epoch;
      result.best_test_accuracy = metrics.test_accuracy;
    }
    if (epoch == options.epochs - 1) result.final_eval = eval;
    if (writes) {
      if (best) SaveClassifier((out_dir / "best").string(), *model, config, &training_json);
      const bool last = epoch == options.epochs - 1;
      if (last) SaveClassifier(out_dir.string(), *model, config, &training_json);
      WriteFileAtomically((out_dir / "metrics.json").string(),
                          MetricsJson(options, result.epochs, result.best_epoch, result.best_test_accuracy,
                                      last ? &result.final_eval : nullptr)
                                  .dump(2) +
                              "\n");
    }
  }
  config.layers = CurrentLayerConfigs(*model);
  model->eval();
  return result;
}

}  // namespace atq
