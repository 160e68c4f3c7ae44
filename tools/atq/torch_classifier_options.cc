// AddClassifierOptions and LoadClassifierFromCli.
#include "torch_classifier_options.h"

#include "command.h"

#include "models/classifiers.h"
#include "data/image_data.h"

namespace atq::cli {

void AddClassifierOptions(CLI::App& app, ClassifierCliOptions& o) {
  o.foreign.dataset = "fashion_mnist";
  o.foreign.normalization = kFashionMnistNormalization;
  app.add_option("checkpoint", o.checkpoint,
                 "A checkpoint folder from `atq train`, a file from `atq export`, or (with --arch or --config) "
                 "another library's safetensors file")
      ->required();
  // A safetensors file from torchvision or timm has no config.json: these describe the model instead.
  CLI::Option* arch = app.add_option("--arch", o.foreign.model,
                                     "CHECKPOINT is another library's safetensors file with this architecture")
                          ->check(CLI::IsMember(ClassifierNames()));
  app.add_option("--config", o.config_path,
                 "CHECKPOINT is another library's safetensors file described by this JSON file (config.json's format)")
      ->excludes(arch);
  // Geometry bounds (named for hostile input): beyond them the model would be sized by a typo, not by the file.
  app.add_option("--image-size", o.foreign.image_size, "With --arch: square image side")->needs(arch)
      ->check(CLI::Range(int64_t{1}, kMaxImageSize))
      ->capture_default_str();
  app.add_option("--patch-size", o.foreign.patch_size, "With --arch: ViT patch side")->needs(arch)
      ->check(CLI::Range(int64_t{1}, kMaxImageSize))
      ->capture_default_str();
  app.add_option("--channels", o.foreign.in_channels, "With --arch: input channels")->needs(arch)
      ->check(CLI::Range(int64_t{1}, kMaxInChannels))
      ->capture_default_str();
  app.add_option("--classes", o.foreign.classes, "With --arch: classes")->needs(arch)
      ->check(CLI::Range(int64_t{1}, kMaxClasses))->capture_default_str();
  app.add_option("--dataset", o.foreign.dataset, "With --arch: dataset (picks the default --data folder)")
      ->needs(arch)
      ->capture_default_str();
  app.add_option("--mean", o.foreign.normalization.mean, "With --arch: input (pixel / 255 - mean) / std")
      ->check(FiniteIn(-1e6, 1e6))
      ->needs(arch)
      ->capture_default_str();
  app.add_option("--std", o.foreign.normalization.std, "With --arch: see --mean")->needs(arch)
      ->check(FiniteIn(1e-6, 1e6))->capture_default_str();
  app.add_option("--data", o.data_dir, "MNIST-format folder (default: the checkpoint's dataset)");
  app.add_option("--threads", o.threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
}

LoadedClassifier LoadClassifierFromCli(const ClassifierCliOptions& o) {
  if (!o.config_path.empty()) return LoadForeignClassifier(o.checkpoint, ReadClassifierConfig(o.config_path));
  if (!o.foreign.model.empty()) return LoadForeignClassifier(o.checkpoint, o.foreign);
  return IsPackedClassifier(o.checkpoint) ? LoadPackedClassifier(o.checkpoint, o.packed_run)
                                         : LoadClassifier(o.checkpoint);
}

}  // namespace atq::cli
