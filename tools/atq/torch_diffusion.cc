// atq train-diffusion and atq generate-image: the text-to-image UNet trained on captioned Fashion-MNIST with a
// trained image-text model's text tower, and DDIM sampling with classifier-free guidance into a PNG (one image,
// or a grid: one row per prompt, one column per seed).
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
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
#include "quant/diffusion_ptq.h"
#include "quant/vision_sensitivity.h"
#include "torch/caching_allocator.h"
#include "torch/tensor_bridge.h"
#include "torch_image_text_options.h"
#include "torch_qat_flags.h"
#include "train/diffusion_trainer.h"
#include "train/image_text_trainer.h"
#include "util/error.h"

namespace atq::cli {
namespace {

// How a text-to-image model is quantized after training: a setting per run ("fp", "W8A8", "W4A8", ...) and the
// calibration that every quantized setting shares.
struct DiffusionQuantFlags {
  std::vector<std::string> settings{"fp"};
  DiffusionPtqOptions ptq;
  bool dequantize = false;  // a packed UNet file in float32 instead of through the packed kernels

  void Add(CLI::App& app, bool many) {
    const auto valid = [](const std::string& text) -> std::string {
      if (text == "fp") return {};
      try {
        const LayerBitWidths bits = ParseBitWidths(text);
        if (bits.ternary || bits.weights == kFloatBits) return "weights must be 2..8 bits";
        return {};
      } catch (const Error& error) {
        return error.what();
      }
    };
    const char* help = many ? "Settings to draw the same images with, a block of rows each: fp (float), W8A8, W6A6, "
                              "W4A8, ... (weights 2..8 bits per channel, activations 2..16 or 32)"
                            : "fp (float), or post-training quantization: W8A8, W6A6, W4A8, ... (weights 2..8 bits "
                              "per channel, activations 2..16 or 32 for float)";
    CLI::Option* option = app.add_option("--setting", settings, help)->check(CLI::Validator(valid, "SETTING"));
    if (many) {
      option->delimiter(',');
    } else {
      option->expected(1);
    }
    option->capture_default_str();
    app.add_option("--timestep-ranges", ptq.timestep_ranges,
                   "Activation grids per range of timesteps (the noise level changes the activations)")
        ->check(CLI::Range(1, 100))
        ->capture_default_str();
    app.add_option("--calib-prompts", ptq.calibration_prompts,
                   "Calibration trajectories drawn by the sampler (training-split wordings)")
        ->check(CLI::Range(10, 1024))
        ->capture_default_str();
    Choices(app.add_option("--weight-clip", ptq.ptq.weight_clip,
                           "Weight scales: mse (the squared error's minimum) or max (absmax)"),
            std::map<std::string, ClipRule>{{"mse", ClipRule::kMse}, {"max", ClipRule::kMax}})
        ->default_str("mse");
    Choices(app.add_option("--range", ptq.ptq.activation_range, "Activation clipping: minmax, percentile or mse"),
            std::map<std::string, RangeMethod>{{"minmax", RangeMethod::kMinMax},
                                               {"percentile", RangeMethod::kPercentile},
                                               {"mse", RangeMethod::kMse}})
        ->default_str("mse");
    app.add_option("--float-activations", ptq.float_activations,
                   "Activation quantizers kept float: a regular expression on their paths (e.g. probs_quant, ^res_u)");
    app.add_option("--smooth", ptq.smooth,
                   "SmoothQuant migration strength alpha (0: off): per-channel divisors of each layer's input, "
                   "folded into its weight before the weights are quantized")
        ->check(FiniteIn(0, 1))
        ->capture_default_str();
    Choices(app.add_option("--activation-grid", ptq.ptq.affine_activations,
                           "Activations of both signs: symmetric or affine (unsigned codes and a zero point)"),
            std::map<std::string, bool>{{"symmetric", false}, {"affine", true}})
        ->default_str("symmetric");
    app.add_flag("--dequantize", dequantize,
                 "A packed UNet file (model.t2.safetensors of a ternary run) runs dequantized in float32, the "
                 "fake-quantized model's arithmetic, instead of through the packed kernels");
  }
};

// A text-to-image folder (or a packed UNet file in one, whose folder holds text_model/) loaded for sampling,
// quantized as `setting` says.
struct TextToImage {
  UNet unet{nullptr};
  ImageTextModel text{nullptr};
  std::unique_ptr<CaptionConditioner> conditioner;
  std::optional<DiffusionPtqResult> ptq;
  nlohmann::json config;
};

TextToImage LoadTextToImage(const std::string& path, const ImageTextData& data, const std::string& setting,
                            const DiffusionQuantFlags& flags, const SamplerOptions& sampler) {
  TextToImage model;
  model.unet = LoadUNetAny(path, flags.dequantize ? PackedRun::kDequantized : PackedRun::kKernels, &model.config);
  std::error_code error;
  const std::filesystem::path folder =
      std::filesystem::is_directory(path, error) ? std::filesystem::path(path) : std::filesystem::path(path).parent_path();
  model.text = LoadImageTextModel((folder / "text_model").string());
  model.conditioner = std::make_unique<CaptionConditioner>(model.text, data.vocabulary.get());
  if (setting == "fp") return model;
  DiffusionPtqOptions options = flags.ptq;
  options.ptq.bits = ParseBitWidths(setting);
  options.sampler.steps = sampler.steps;
  options.sampler.guidance = sampler.guidance;
  options.sampler.seed = sampler.seed;
  if (model.config.contains("training") && model.config["training"].contains("seed")) {
    options.caption_seed = model.config["training"]["seed"].get<uint64_t>();
  }
  model.ptq = QuantizeTextToImage(*model.unet, model.text->text(), *model.conditioner, *data.captions, options);
  return model;
}

GrayImage ImageOf(const torch::Tensor& pixels) {
  const torch::Tensor one = pixels.contiguous();
  return {one.size(1), one.size(0),
          std::vector<uint8_t>(one.data_ptr<uint8_t>(), one.data_ptr<uint8_t>() + one.numel())};
}

}  // namespace

RunFn DeclareTrainDiffusion(CLI::App& app) {
  struct Options {
    DiffusionTrainOptions train;
    ImageTextDataFlags data;
    WeightQatFlags qat;
    std::string packed_type = "t2";
    int threads = 0;
    std::string out_dir;
  };
  auto o = std::make_shared<Options>();
  DiffusionTrainOptions& t = o->train;
  app.add_option("--text-model", t.text_model,
                 "Image-text checkpoint folder whose text tower reads the captions (default with --init: its "
                 "text_model/)");
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
  AddWeightQatFlags(app, o->qat);
  app.add_flag("--quantize-edges", t.quantize_edges, "Also quantize conv_in and conv_out (the image's own channels)");
  app.add_option("--init", t.init_from, "Start from this text-to-image folder's UNet (e.g. the full-precision one)");
  app.add_option("--distill", t.distill_teacher,
                 "Distil from this text-to-image folder's UNet (full precision): its noise predictions as soft targets");
  app.add_option("--distill-alpha", t.distill_alpha, "Weight of the teacher's prediction in the loss")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--packed-type", o->packed_type, "Packing of a ternary UNet's file: t2 or t1.6")
      ->check(CLI::IsMember({"t2", "t1.6"}))
      ->capture_default_str();
  app.add_option("--threads", o->threads, "Threads (0: every core)")->check(ThreadCount())->capture_default_str();
  app.add_option("--out", o->out_dir,
                 "Output folder: model.safetensors + config.json (the UNet), text_model/ (the text tower's model), "
                 "and model.<packed-type>.safetensors for a ternary UNet")
      ->required();
  return [o] {
    UseCachingCpuAllocator();
    DiffusionTrainOptions options = o->train;
    ImageTextDataFlags data = o->data;
    data.Resolve();
    options.data_dir = data.data_dir;
    options.caption_file = data.caption_file;
    options.tokenizer_dir = data.tokenizer_dir;
    options.qat = ResolveWeightQat(o->qat);
    Require(!options.text_model.empty() || !options.init_from.empty(), "train-diffusion: --text-model or --init "
            "names the image-text model that reads the captions");
    std::vector<std::string> inputs = data.Inputs();
    for (const std::string* input : {&options.text_model, &options.init_from, &options.distill_teacher}) {
      inputs.push_back(*input);
    }
    CheckOutputPath(o->out_dir, inputs, "--out");
    OutputLock lock(o->out_dir);
    SetTorchThreads(o->threads);
    options.on_line = [](const std::string& line) { std::cout << line << std::endl; };
    DiffusionTrainResult result = TrainDiffusion(options);
    const nlohmann::json extra = {
        {"training",
         {{"epochs", options.epochs}, {"batch", options.batch_size}, {"learning_rate", options.learning_rate},
          {"drop_caption", options.drop_caption}, {"ema", options.ema_decay}, {"seed", options.seed},
          {"subset", options.subset}, {"captions", options.caption_file}, {"text_model", result.text_model},
          {"qat", options.qat.ToJson()}, {"quantize_edges", options.quantize_edges}, {"init", options.init_from},
          {"distill", options.distill_teacher}, {"distill_alpha", options.distill_alpha},
          {"sparsity", result.sparsity}, {"seconds", result.seconds}, {"threads", torch::get_num_threads()},
          {"epoch_loss", result.epoch_loss}}},
        {"parameters", result.parameters}};
    // The text tower travels with the UNet: the folder is the whole model.
    ImageTextModel text = LoadImageTextModel(result.text_model);
    SaveImageTextModel((std::filesystem::path(o->out_dir) / "text_model").string(), *text, {});
    SaveUNet(o->out_dir, *result.unet, extra);
    std::string packed_note;
    if (options.qat.mode == WeightMode::kTernary) {
      const std::string packed =
          (std::filesystem::path(o->out_dir) / fmt::format("model.{}.safetensors", o->packed_type)).string();
      const int64_t bytes = ExportPackedUNet(*result.unet, extra, *ParseQuantType(o->packed_type), packed);
      packed_note = fmt::format("; packed UNet {} bytes in {} (sparsity {:.3f})", bytes, packed, result.sparsity);
    }
    fmt::print("text-to-image UNet ({} parameters, {} weights) trained in {:.0f} s, final loss {:.4f}; written to "
               "{}{}\n",
               result.parameters, WeightModeName(options.qat.mode), result.seconds, result.epoch_loss.back(),
               o->out_dir, packed_note);
    return 0;
  };
}

RunFn DeclareGenerateImage(CLI::App& app) {
  struct Options {
    std::string model;
    std::vector<std::string> prompts;
    ImageTextDataFlags data;
    SamplerOptions sampler;
    DiffusionQuantFlags quant;
    int64_t count = 1;
    int threads = 0;
    std::string out;
  };
  auto o = std::make_shared<Options>();
  app.add_option("MODEL", o->model,
                 "Text-to-image folder (atq train-diffusion --out), or the packed UNet file of a ternary one")
      ->required();
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
  o->quant.Add(app, /*many=*/true);
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
    // Rows of the grid: each setting's block of prompts, each prompt `count` times; sample (p, c) starts from the
    // noise of index p * count + c in every setting, so the blocks differ by the quantization alone.
    std::vector<std::string> texts;
    for (const std::string& prompt : o->prompts) {
      for (int64_t c = 0; c < o->count; ++c) texts.push_back(prompt);
    }
    std::vector<GrayImage> images;
    for (const std::string& setting : o->quant.settings) {
      TextToImage model = LoadTextToImage(o->model, captions, setting, o->quant, o->sampler);
      SamplerOptions sampler = o->sampler;
      if (model.ptq) sampler.on_timestep = model.ptq->OnTimestep();
      const auto start = std::chrono::steady_clock::now();
      const torch::Tensor pixels = ToPixels(
          SampleDdim(*model.unet, NoiseSchedule(), model.conditioner->Encode(texts), model.conditioner->Encode({""}),
                     sampler));
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      for (int64_t i = 0; i < pixels.size(0); ++i) images.push_back(ImageOf(pixels[i]));
      fmt::print("{}: {} image{} ({} DDIM steps, guidance {}) in {:.1f} s\n", setting, pixels.size(0),
                 pixels.size(0) == 1 ? "" : "s", o->sampler.steps, o->sampler.guidance, seconds);
    }
    WriteGrayPng(o->out, images.size() == 1 ? images[0] : TileImages(images, o->count));
    fmt::print("written to {} ({} row{} of {})\n", o->out, images.size() / o->count,
               images.size() / o->count == 1 ? "" : "s", o->count);
    return 0;
  };
}

RunFn DeclareEvalDiffusion(CLI::App& app) {
  struct Options {
    std::string model, judge, judge_arch = "resnet18";
    ImageTextDataFlags data;
    TextToImageEvalOptions eval;
    DiffusionQuantFlags quant;
    int threads = 0;
    bool against_fp = false;
    std::string baseline;
    std::string json_path, grid_path;
  };
  auto o = std::make_shared<Options>();
  app.add_option("MODEL", o->model,
                 "Text-to-image folder (atq train-diffusion --out), or the packed UNet file of a ternary one")
      ->required();
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
  o->quant.Add(app, /*many=*/false);
  app.add_option("--json", o->json_path, "Write the figures as JSON");
  app.add_option("--grid", o->grid_path, "Save the first 10 images of every class as a PNG grid (a row per class)");
  app.add_flag("--against-fp", o->against_fp,
               "With a quantized --setting: also draw the float model's images from the same prompts and noise, and "
               "report both and how far the quantized images lie from them (mean |pixel difference|, PSNR)");
  app.add_option("--baseline", o->baseline,
                 "Another text-to-image folder (e.g. the float one a ternary UNet was trained from) drawn from the "
                 "same prompts and noise and compared as --against-fp compares");
  return [o] {
    UseCachingCpuAllocator();
    ImageTextDataFlags data = o->data;
    data.Resolve();
    for (const std::string* output : {&o->json_path, &o->grid_path}) {
      if (!output->empty()) CheckOutputPath(*output, {o->model, o->judge, data.data_dir, o->baseline}, "output");
    }
    SetTorchThreads(o->threads);
    const ImageTextData images = LoadImageTextData(data.data_dir, data.caption_file, data.tokenizer_dir,
                                                   /*subset=*/1, /*test_subset=*/0);
    ClassifierConfig judge_config;
    judge_config.model = o->judge_arch;
    judge_config.classes = images.captions->classes();
    judge_config.image_size = images.image_size;
    judge_config.dataset = "fashion_mnist";
    judge_config.normalization = kFashionMnistNormalization;
    const LoadedClassifier judge = LoadClassifierOrWeights(o->judge, judge_config);
    const TextToImageJudge judged{judge.model.get(), judge.config.normalization};
    const auto print = [&](const std::string& setting, const TextToImageQuality& quality, int64_t steps,
                           double guidance) {
      fmt::print("{}: {} images ({} DDIM steps, guidance {}) in {:.0f} s ({:.2f} images/s): class accuracy {:.2f}% "
                 "by {}, Fréchet distance {:.3f} to {} test images (on which the judge scores {:.2f}%)\n",
                 setting, quality.samples, steps, guidance, quality.seconds, quality.images_per_second,
                 100 * quality.class_accuracy, o->judge, quality.frechet_distance, quality.samples,
                 100 * quality.real_class_accuracy);
    };
    const auto caption_seed_of = [&](const nlohmann::json& config) {
      return config.contains("training") && config["training"].contains("seed")
                 ? config["training"]["seed"].get<uint64_t>()
                 : o->eval.caption_seed;
    };
    // After the judge: a bad judge file is refused before the calibration runs.
    TextToImage model = LoadTextToImage(o->model, images, o->quant.settings.front(), o->quant, o->eval.sampler);
    TextToImageEvalOptions options = o->eval;
    if (model.ptq) options.sampler.on_timestep = model.ptq->OnTimestep();
    options.caption_seed = caption_seed_of(model.config);
    // The float model's images (same prompts and noise) when the quantized ones are compared with them: this
    // folder's at fp, or the baseline folder's.
    std::optional<TextToImageQuality> fp_quality;
    torch::Tensor fp_pixels;
    const std::string reference = o->baseline.empty() ? std::string("fp") : o->baseline;
    if (!o->baseline.empty() || (o->against_fp && o->quant.settings.front() != "fp")) {
      DiffusionQuantFlags float_flags = o->quant;
      float_flags.dequantize = false;
      TextToImage fp = LoadTextToImage(o->baseline.empty() ? o->model : o->baseline, images, "fp", float_flags,
                                       o->eval.sampler);
      TextToImageEvalOptions fp_options = o->eval;
      fp_options.caption_seed = options.caption_seed;
      fp_quality = EvaluateTextToImage(*fp.unet, *fp.conditioner, *images.captions, images.test, judged, fp_options,
                                       &fp_pixels);
      print(reference, *fp_quality, fp_options.sampler.steps, fp_options.sampler.guidance);
    }
    torch::Tensor pixels, labels;
    const TextToImageQuality quality = EvaluateTextToImage(*model.unet, *model.conditioner, *images.captions,
                                                           images.test, judged, options, &pixels, &labels);
    // A UNet trained quantized (ternary QAT): its layers as stored.
    const UNetWeightSize weights = MeasureUNetWeights(*model.unet);
    const QuantizedModelSize& size = weights.size;
    const std::string label = size.quantized_layers > 0 ? "quantized UNet" : o->quant.settings.front();
    print(label, quality, options.sampler.steps, options.sampler.guidance);
    if (size.quantized_layers > 0) {
      fmt::print("UNet: {} quantized layers ({} weights, sparsity {:.3f}) {} -> {} bytes ({:.2f}x smaller{}); whole "
                 "UNet {} -> {} bytes\n",
                 size.quantized_layers, size.quantized_weights, weights.sparsity, size.quantized_fp32_bytes,
                 size.quantized_bytes, size.Compression(),
                 size.packed_kernels ? ", through the packed kernels" : ", fake-quantized in float",
                 size.model_fp32_bytes, size.model_bytes);
    }
    std::optional<ImageDeviation> deviation;
    if (fp_quality) {
      deviation = CompareImages(pixels, fp_pixels);
      fmt::print("{} against {}: Fréchet distance {:.3f}x of its; images {:.2f} gray levels from its on average "
                 "(PSNR {:.2f} dB)\n",
                 label, reference, quality.frechet_distance / fp_quality->frechet_distance,
                 deviation->mean_abs_pixel, deviation->psnr_db);
    }
    if (model.ptq) {
      fmt::print("{}: quantized layers {} -> {} bytes ({:.2f}x smaller; UNet {} + text tower {}), calibrated in "
                 "{:.1f} s\n",
                 o->quant.settings.front(), model.ptq->float_bytes,
                 model.ptq->unet.packed_bytes() + model.ptq->text.packed_bytes(),
                 static_cast<double>(model.ptq->float_bytes) /
                     static_cast<double>(model.ptq->unet.packed_bytes() + model.ptq->text.packed_bytes()),
                 model.ptq->unet.packed_bytes(), model.ptq->text.packed_bytes(), model.ptq->seconds);
    }
    if (!o->grid_path.empty()) {
      std::vector<GrayImage> rows;
      const int64_t per_class = std::min<int64_t>(10, quality.samples / images.captions->classes());
      for (int label = 0; label < images.captions->classes(); ++label) {
        const torch::Tensor indices = labels.eq(label).nonzero().reshape({-1}).slice(0, 0, per_class);
        for (int64_t k = 0; k < indices.size(0); ++k) {
          rows.push_back(ImageOf(pixels[indices[k].item<int64_t>()]));
        }
      }
      WriteGrayPng(o->grid_path, TileImages(rows, per_class));
    }
    if (!o->json_path.empty()) {
      nlohmann::json json = {{"model", o->model},
                                   {"judge", o->judge},
                                   {"steps", options.sampler.steps},
                                   {"guidance", options.sampler.guidance},
                                   {"seed", options.sampler.seed},
                                   {"threads", torch::get_num_threads()},
                                   {"setting", o->quant.settings.front()},
                                   {"quality", quality.ToJson()}};
      if (model.ptq) json["quantization"] = model.ptq->ToJson();
      if (weights.size.quantized_layers > 0) json["unet_weights"] = weights.ToJson();
      if (!o->baseline.empty()) json["baseline"] = o->baseline;
      if (fp_quality) {
        json["fp_quality"] = fp_quality->ToJson();
        json["deviation_from_fp"] = deviation->ToJson();
        json["frechet_ratio_to_fp"] = quality.frechet_distance / fp_quality->frechet_distance;
      }
      WriteFileAtomically(o->json_path, json.dump(2) + "\n");
    }
    return 0;
  };
}

}  // namespace atq::cli
