// atq train: a full-precision or quantization-aware (ATQ ternary, uniform b-bit) image classifier.
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "models/classifiers.h"
#include "models/classifier_checkpoint.h"
#include "torch_workers.h"
#include "train/trainer.h"
#include "util/error.h"
#include "io/output_path.h"
#include "torch/caching_allocator.h"
#include "torch_qat_flags.h"

namespace atq::cli {

RunFn DeclareTrain(CLI::App& app) {
  struct Options {
    TrainOptions train;
    WeightQatFlags qat;
    Workers workers;
  };
  auto o = std::make_shared<Options>();
  TrainOptions& t = o->train;
  app.add_option("--dataset", t.dataset, "fashion_mnist or mnist (with --data), or a name for --data")
      ->capture_default_str();
  app.add_option("--data", t.data_dir, "An MNIST-format folder (default: the dataset's installed copy)");
  app.add_option("--model", t.model, "mlp, cnn, resnet18 or vit-tiny")->capture_default_str();
  app.add_option("--batch-size", t.batch_size)->check(CountFrom(1))->capture_default_str();
  app.add_option("--epochs", t.epochs)->check(CountFrom(1))->capture_default_str();
  app.add_option("--learning-rate", t.learning_rate, "Peak learning rate (cosine-annealed)")
      ->check(FiniteIn(1e-12, 1e3))
      ->capture_default_str();
  app.add_option("--weight-decay", t.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  AddWeightQatFlags(app, o->qat);
  app.add_flag("--quantize-first-last", t.quantize_first_last, "Also quantize the input and output layers");
  app.add_option(
      "--init", t.init_from,
      "Start from this checkpoint folder or weights file (e.g. the full-precision model, or torchvision's or "
      "timm's safetensors under atq's tensor names)");
  app.add_option("--distill", t.distill_teacher,
                 "Distil from this full-precision teacher: a checkpoint folder, or a weights file of the same "
                 "architecture");
  app.add_option("--temperature", t.temperature, "Distillation temperature")->capture_default_str();
  app.add_option("--distill-alpha", t.distill_alpha, "Weight of the teacher's soft targets")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--seed", t.seed)->capture_default_str();
  app.add_flag("--augment", t.augment, "Random crops and flips");
  app.add_option("--subset", t.subset, "Train on the first N images only")->check(CountFrom(0));
  app.add_option("--test-subset", t.test_subset, "Evaluate on the first N test images only")->check(CountFrom(0));
  app.add_option("--threads", t.threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
  AddWorkerFlags(app, o->workers);
  app.add_option("--out", t.out_dir, "Output folder: model.safetensors, config.json, metrics.json, best/")
      ->required();
  return [o] {
    UseCachingCpuAllocator();  // a step's large tensors reuse freed blocks instead of fresh pages
    CheckOutputPath(o->train.out_dir, {o->train.init_from, o->train.distill_teacher, o->train.data_dir}, "--out");
    if (const std::optional<int> status = StartWorkers(o->workers, o->train.threads)) return *status;
    std::optional<OutputLock> lock;  // one writer: rank 0
    if (!o->workers.parallel || o->workers.parallel->writes()) lock.emplace(o->train.out_dir);
    TrainOptions options = o->train;
    options.parallel = o->workers.parallel.get();
    options.qat = ResolveWeightQat(o->qat);
    const TrainResult result = Train(options);
    if (options.parallel && !options.parallel->writes()) return 0;
    fmt::print("{}: best test accuracy {:.2f}% at epoch {}, final {:.2f}%; written to {}\n", options.model,
               100 * result.best_test_accuracy, result.best_epoch, 100 * result.final_eval.accuracy,
               options.out_dir);
    return 0;
  };
}

}  // namespace atq::cli
