// atq train-diffusion and atq generate-image: the text-to-image UNet trained on captioned Fashion-MNIST with a
// trained image-text model's text tower, and DDIM sampling with classifier-free guidance into a PNG (one image,
// or a grid: one row per prompt, one column per seed).
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "eval/text_to_image_eval.h"
#include "io/atomic_file.h"
#include "io/output_path.h"
#include "models/classifier_checkpoint.h"
#include "io/png.h"
#include "models/diffusion.h"
#include "torch/caching_allocator.h"
#include "torch/tensor_bridge.h"
#include "torch_image_text_options.h"
#include "train/diffusion_trainer.h"
#include "train/image_text_trainer.h"
#include "util/error.h"

namespace atq::cli {

RunFn DeclareTrainDiffusion(CLI::App& app) {
  struct Options {
    DiffusionTrainOptions train;
    ImageTextDataFlags data;
    int threads = 0;
    std::string out_dir;
  };
  auto o = std::make_shared<Options>();
  DiffusionTrainOptions& t = o->train;
  app.add_option("--text-model", t.text_model, "Image-text checkpoint folder whose text tower reads the captions")
      ->required();
  AddImageTextDataFlags(app, o->data);
  app.add_option("--epochs", t.epochs, "Epochs")->check(CountFrom(1))->capture_default_str();
  app.add_option("--batch", t.batch_size, "Images per batch")->check(CountFrom(1))->capture_default_str();
  app.add_option("--lr", t.learning_rate, "Peak learning rate (AdamW, warm-up + cosine)")
      ->check(FiniteIn(1e-8, 1.0))
      ->capture_default_str();
  app.add_option("--channels", t.unet.channels, "UNet width C (C at full size, 2C below)")
      ->check(CLI::Range(8, 512))
      ->capture_default_str();
  app.add_option("--drop-caption", t.drop_caption, "Share of captions replaced by the empty one (for guidance)")
      ->check(FiniteIn(0, 0.9))
      ->capture_default_str();
  app.add_option("--ema", t.ema_decay, "Decay of the weights' moving average (0: none)")
      ->check(FiniteIn(0, 0.99999))
      ->capture_default_str();
  app.add_option("--seed", t.seed, "Seed of the weights, order, captions and noise")->capture_default_str();
  app.add_option("--subset", t.subset, "Train on the first N images only (0: all)")->check(CountFrom(0));
  app.add_option("--threads", o->threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
  app.add_option("--out", o->out_dir,
                 "Output folder: model.safetensors + config.json (the UNet), text_model/ (the text tower's model)")
      ->required();
  return [o] {
    UseCachingCpuAllocator();
    DiffusionTrainOptions options = o->train;
    ImageTextDataFlags data = o->data;
    data.Resolve();
    options.data_dir = data.data_dir;
    options.caption_file = data.caption_file;
    options.tokenizer_dir = data.tokenizer_dir;
    std::vector<std::string> inputs = data.Inputs();
    inputs.push_back(options.text_model);
    CheckOutputPath(o->out_dir, inputs, "--out");
    OutputLock lock(o->out_dir);
    SetTorchThreads(o->threads);
    options.on_line = [](const std::string& line) { std::cout << line << std::endl; };
    DiffusionTrainResult result = TrainDiffusion(options);
    const nlohmann::json extra = {
        {"training",
         {{"epochs", options.epochs}, {"batch", options.batch_size}, {"learning_rate", options.learning_rate},
          {"drop_caption", options.drop_caption}, {"ema", options.ema_decay}, {"seed", options.seed},
          {"subset", options.subset}, {"captions", options.caption_file}, {"text_model", options.text_model},
          {"seconds", result.seconds}, {"threads", torch::get_num_threads()}, {"epoch_loss", result.epoch_loss}}},
        {"parameters", result.parameters}};
    // The text tower travels with the UNet: the folder is the whole model.
    ImageTextModel text = LoadImageTextModel(options.text_model);
    SaveImageTextModel((std::filesystem::path(o->out_dir) / "text_model").string(), *text, {});
    SaveUNet(o->out_dir, *result.unet, extra);
    fmt::print("text-to-image UNet ({} parameters) trained in {:.0f} s, final loss {:.4f}; written to {}\n",
               result.parameters, result.seconds, result.epoch_loss.back(), o->out_dir);
    return 0;
  };
}

RunFn DeclareGenerateImage(CLI::App& app) {
  struct Options {
    std::string model;
    std::vector<std::string> prompts;
    ImageTextDataFlags data;
    SamplerOptions sampler;
    int64_t count = 1;
    int threads = 0;
    std::string out;
  };
  auto o = std::make_shared<Options>();
  app.add_option("MODEL", o->model, "Text-to-image folder (atq train-diffusion --out)")->required();
  app.add_option("--prompt", o->prompts, "What to draw (repeat for a grid with one row per prompt)")->required();
  AddImageTextDataFlags(app, o->data);
  app.add_option("--steps", o->sampler.steps, "DDIM steps")->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--guidance", o->sampler.guidance, "Classifier-free guidance weight (1: none)")
      ->check(FiniteIn(0, 50))
      ->capture_default_str();
  app.add_option("--seed", o->sampler.seed, "Seed of the starting noise")->capture_default_str();
  app.add_option("--count", o->count, "Images per prompt (columns of the grid, seeds S, S+1, ...)")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--threads", o->threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
  app.add_option("--out", o->out, "PNG file")->required();
  return [o] {
    UseCachingCpuAllocator();  // each step's activations reuse freed blocks instead of fresh pages
    ImageTextDataFlags data = o->data;
    data.Resolve();
    CheckOutputPath(o->out, {o->model, data.caption_file}, "--out");
    SetTorchThreads(o->threads);
    const ImageTextData captions =
        LoadImageTextData(data.data_dir, data.caption_file, data.tokenizer_dir, /*subset=*/1, /*test_subset=*/1);
    UNet unet = LoadUNet(o->model);
    const CaptionConditioner conditioner(
        LoadImageTextModel((std::filesystem::path(o->model) / "text_model").string()), captions.vocabulary.get());
    // Rows of the grid: each prompt `count` times; sample (p, c) starts from the noise of index p * count + c.
    std::vector<std::string> texts;
    for (const std::string& prompt : o->prompts) {
      for (int64_t c = 0; c < o->count; ++c) texts.push_back(prompt);
    }
    const auto start = std::chrono::steady_clock::now();
    const torch::Tensor pixels = ToPixels(SampleDdim(*unet, NoiseSchedule(), conditioner.Encode(texts),
                                                     conditioner.Encode({""}), o->sampler));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::vector<GrayImage> images;
    for (int64_t i = 0; i < pixels.size(0); ++i) {
      const torch::Tensor one = pixels[i].contiguous();
      images.push_back({one.size(1), one.size(0),
                        std::vector<uint8_t>(one.data_ptr<uint8_t>(), one.data_ptr<uint8_t>() + one.numel())});
    }
    WriteGrayPng(o->out, images.size() == 1 ? images[0] : TileImages(images, o->count));
    fmt::print("{} image{} ({} DDIM steps, guidance {}) in {:.1f} s: {}\n", images.size(),
               images.size() == 1 ? "" : "s", o->sampler.steps, o->sampler.guidance, seconds, o->out);
    return 0;
  };
}

RunFn DeclareEvalDiffusion(CLI::App& app) {
  struct Options {
    std::string model, judge, judge_arch = "resnet18";
    ImageTextDataFlags data;
    TextToImageEvalOptions eval;
    int threads = 0;
    std::string json_path, grid_path;
  };
  auto o = std::make_shared<Options>();
  app.add_option("MODEL", o->model, "Text-to-image folder (atq train-diffusion --out)")->required();
  app.add_option("--judge", o->judge,
                 "The classifier that judges the images: a checkpoint, or weights of --judge-arch (e.g. "
                 "$ATQ_FIXTURES/resnet18/model.safetensors)")
      ->required();
  app.add_option("--judge-arch", o->judge_arch, "Architecture of a weights file without config.json")
      ->check(CLI::IsMember({"cnn", "resnet18"}))
      ->capture_default_str();
  AddImageTextDataFlags(app, o->data);
  app.add_option("--samples", o->eval.samples, "Images drawn (held-out wordings, classes in turn)")
      ->check(CLI::Range(20, 100000))
      ->capture_default_str();
  app.add_option("--steps", o->eval.sampler.steps, "DDIM steps")->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--guidance", o->eval.sampler.guidance, "Classifier-free guidance weight")
      ->check(FiniteIn(0, 50))
      ->capture_default_str();
  app.add_option("--seed", o->eval.sampler.seed, "Seed of the starting noise")->capture_default_str();
  app.add_option("--threads", o->threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
  app.add_option("--json", o->json_path, "Write the figures as JSON");
  app.add_option("--grid", o->grid_path, "Save the first 10 images of every class as a PNG grid (a row per class)");
  return [o] {
    UseCachingCpuAllocator();
    ImageTextDataFlags data = o->data;
    data.Resolve();
    for (const std::string* output : {&o->json_path, &o->grid_path}) {
      if (!output->empty()) CheckOutputPath(*output, {o->model, o->judge, data.data_dir}, "output");
    }
    SetTorchThreads(o->threads);
    const ImageTextData images = LoadImageTextData(data.data_dir, data.caption_file, data.tokenizer_dir,
                                                   /*subset=*/1, /*test_subset=*/0);
    nlohmann::json config;
    UNet unet = LoadUNet(o->model, &config);
    const CaptionConditioner conditioner(
        LoadImageTextModel((std::filesystem::path(o->model) / "text_model").string()), images.vocabulary.get());
    ClassifierConfig judge_config;
    judge_config.model = o->judge_arch;
    judge_config.classes = images.captions->classes();
    judge_config.image_size = images.image_size;
    judge_config.dataset = "fashion_mnist";
    judge_config.normalization = kFashionMnistNormalization;
    const LoadedClassifier judge = LoadClassifierOrWeights(o->judge, judge_config);
    TextToImageEvalOptions options = o->eval;
    if (config.contains("training") && config["training"].contains("seed")) {
      options.caption_seed = config["training"]["seed"].get<uint64_t>();
    }
    torch::Tensor pixels, labels;
    const TextToImageQuality quality =
        EvaluateTextToImage(*unet, conditioner, *images.captions, images.test,
                            {judge.model.get(), judge.config.normalization}, options, &pixels, &labels);
    fmt::print("{} images ({} DDIM steps, guidance {}) in {:.0f} s ({:.2f} images/s): class accuracy {:.2f}% by {}, "
               "Fréchet distance {:.3f} to {} test images (on which the judge scores {:.2f}%)\n",
               quality.samples, options.sampler.steps, options.sampler.guidance, quality.seconds,
               quality.images_per_second, 100 * quality.class_accuracy, o->judge, quality.frechet_distance,
               quality.samples, 100 * quality.real_class_accuracy);
    if (!o->grid_path.empty()) {
      std::vector<GrayImage> rows;
      const int64_t per_class = std::min<int64_t>(10, quality.samples / images.captions->classes());
      for (int label = 0; label < images.captions->classes(); ++label) {
        const torch::Tensor indices = labels.eq(label).nonzero().reshape({-1}).slice(0, 0, per_class);
        for (int64_t k = 0; k < indices.size(0); ++k) {
          const torch::Tensor one = pixels[indices[k].item<int64_t>()].contiguous();
          rows.push_back({one.size(1), one.size(0),
                          std::vector<uint8_t>(one.data_ptr<uint8_t>(), one.data_ptr<uint8_t>() + one.numel())});
        }
      }
      WriteGrayPng(o->grid_path, TileImages(rows, per_class));
    }
    if (!o->json_path.empty()) {
      const nlohmann::json json = {{"model", o->model},
                                   {"judge", o->judge},
                                   {"steps", options.sampler.steps},
                                   {"guidance", options.sampler.guidance},
                                   {"seed", options.sampler.seed},
                                   {"threads", torch::get_num_threads()},
                                   {"quality", quality.ToJson()}};
      WriteFileAtomically(o->json_path, json.dump(2) + "\n");
    }
    return 0;
  };
}

}  // namespace atq::cli
