// atq train-image-text: the image-text model (image and text towers, fusion) trained on Fashion-MNIST with seeded
// English captions, in full precision or quantization-aware (ternary by ATQ) with distillation; every metric on
// held-out wordings after every epoch; a ternary model is also written packed.
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "eval/image_text_report.h"
#include "io/atomic_file.h"
#include "io/output_path.h"
#include "report/plot.h"
#include "torch/caching_allocator.h"
#include "torch/tensor_bridge.h"
#include "torch_image_text_options.h"
#include "torch_qat_flags.h"
#include "train/image_text_trainer.h"
#include "util/error.h"

namespace atq::cli {

RunFn DeclareTrainImageText(CLI::App& app) {
  struct Options {
    ImageTextTrainOptions train;
    ImageTextDataFlags data;
    WeightQatFlags qat;
    std::string packed_type = "t2";
    int threads = 0;
    std::string out_dir;
    std::string plot_path;
  };
  auto o = std::make_shared<Options>();
  ImageTextTrainOptions& t = o->train;
  AddImageTextDataFlags(app, o->data);
  app.add_option("--epochs", t.epochs, "Epochs")->check(CountFrom(1))->capture_default_str();
  app.add_option("--batch", t.batch_size, "Images per batch (the contrastive negatives of each other)")
      ->check(CountFrom(2))
      ->capture_default_str();
  app.add_option("--lr", t.learning_rate, "Peak learning rate (AdamW, warm-up + cosine)")
      ->check(FiniteIn(1e-8, 1.0))
      ->capture_default_str();
  app.add_option("--match-weight", t.match_weight, "Weight of the image-text matching loss (0: towers only)")
      ->check(FiniteIn(0, 100))
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
  app.add_option("--fusion-depth", t.model.fusion_depth, "Cross-attention blocks of the fusion module")
      ->check(CLI::Range(1, 24))
      ->capture_default_str();
  AddWeightQatFlags(app, o->qat);
  app.add_flag("--quantize-first", t.quantize_first, "Also quantize image.conv1 (the raw image's input layer)");
  app.add_option("--init", t.init_from, "Start from this image-text checkpoint folder (e.g. the full-precision one)");
  app.add_option("--distill", t.distill_teacher, "Distil from this image-text checkpoint folder (full precision)");
  app.add_option("--temperature", t.temperature, "Distillation temperature")
      ->check(FiniteIn(1e-3, 100))
      ->capture_default_str();
  app.add_option("--distill-alpha", t.distill_alpha, "Weight of the teacher's soft targets")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--packed-type", o->packed_type, "Packing of a ternary model's file: t2 or t1.6")
      ->check(CLI::IsMember({"t2", "t1.6"}))
      ->capture_default_str();
  app.add_option("--threads", o->threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
  app.add_option("--plot", o->plot_path, "Draw zero-shot accuracy, recall and matching against epochs (PNG)");
  app.add_option("--out", o->out_dir,
                 "Output folder: model.safetensors + config.json (with the metrics per epoch), report.json, and "
                 "model.<packed-type>.safetensors for a ternary model")
      ->required();
  return [o] {
    UseCachingCpuAllocator();  // a step's large tensors reuse freed blocks instead of fresh pages
    ImageTextTrainOptions options = o->train;
    ImageTextDataFlags data = o->data;
    data.Resolve();
    options.data_dir = data.data_dir;
    options.caption_file = data.caption_file;
    options.tokenizer_dir = data.tokenizer_dir;
    options.qat = ResolveWeightQat(o->qat);
    std::vector<std::string> inputs = data.Inputs();
    inputs.push_back(options.init_from);
    inputs.push_back(options.distill_teacher);
    CheckOutputPath(o->out_dir, inputs, "--out");
    if (!o->plot_path.empty()) {  // checked before the training, not after it
      inputs.push_back(o->out_dir);
      CheckOutputPath(o->plot_path, inputs, "--plot");
    }
    OutputLock lock(o->out_dir);
    SetTorchThreads(o->threads);
    options.on_line = [](const std::string& line) { std::cout << line << std::endl; };  // flushed: progress
    ImageTextTrainResult result = TrainImageText(options);
    nlohmann::json epochs = nlohmann::json::array();
    for (const ImageTextMetrics& metrics : result.epochs) {
      nlohmann::json row = metrics.ToJson();
      row.erase("zero_shot_confusion");
      epochs.push_back(std::move(row));
    }
    nlohmann::json training = {{"epochs", options.epochs},       {"batch", options.batch_size},
                               {"learning_rate", options.learning_rate}, {"match_weight", options.match_weight},
                               {"seed", options.seed},           {"subset", options.subset},
                               {"captions", options.caption_file}, {"qat", options.qat.ToJson()},
                               {"quantize_first", options.quantize_first}, {"init", options.init_from},
                               {"distill", options.distill_teacher}, {"temperature", options.temperature},
                               {"distill_alpha", options.distill_alpha}, {"seconds", result.seconds},
                               {"threads", torch::get_num_threads()}};
    const nlohmann::json extra = {
        {"training", training}, {"parameters", result.parameters}, {"metrics_per_epoch", epochs}};
    const std::filesystem::path out(o->out_dir);
    SaveImageTextModel(o->out_dir, *result.model, extra);
    std::string packed_note;
    if (options.qat.mode == WeightMode::kTernary) {
      const std::string packed = (out / fmt::format("model.{}.safetensors", o->packed_type)).string();
      const int64_t bytes =
          ExportPackedImageText(*result.model, extra, *ParseQuantType(o->packed_type), packed);
      packed_note = fmt::format(", packed {} bytes in {}", bytes, packed);
    }
    // The last epoch's metrics with sizes and energy (the model as trained: fake-quantized layers).
    const ImageTextData loaded = LoadImageTextData(options.data_dir, options.caption_file, options.tokenizer_dir,
                                                   options.subset, options.test_subset);
    const ImageTextReport report =
        ReportImageText(*result.model, loaded, options.seed, options.retrieval_images, EnergyModel());
    nlohmann::json report_json = report.ToJson();
    report_json["training"] = training;
    WriteFileAtomically((out / "report.json").string(), report_json.dump(2) + "\n");
    if (!o->plot_path.empty()) {
      PlotSpec spec;
      spec.title = "image-text model on held-out wordings";
      spec.x_label = "epoch";
      spec.y_label = "%";
      const std::vector<std::pair<std::string, double ImageTextMetrics::*>> series = {
          {"zero-shot accuracy", &ImageTextMetrics::zero_shot_accuracy},
          {"image->text R@1", &ImageTextMetrics::image_to_text_recall1},
          {"text->image R@1", &ImageTextMetrics::text_to_image_recall1},
          {"matching accuracy", &ImageTextMetrics::matching_accuracy}};
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
    fmt::print("image-text model ({} parameters, {} weights) trained in {:.0f} s: zero-shot {:.2f}%, matching "
               "{:.2f}% on held-out wordings; written to {}{}\n",
               result.parameters, WeightModeName(options.qat.mode), result.seconds, 100 * last.zero_shot_accuracy,
               100 * last.matching_accuracy, o->out_dir, packed_note);
    return 0;
  };
}

}  // namespace atq::cli
