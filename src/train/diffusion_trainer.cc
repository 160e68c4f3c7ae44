#include "train/diffusion_trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <filesystem>
#include <memory>

#include <fmt/format.h>
#include <torch/torch.h>

#include "data/image_data.h"
#include "train/image_text_trainer.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/progress.h"

namespace atq {

std::vector<std::string> UNetEdgeLayers() { return {"conv_in", "conv_out"}; }

DiffusionTrainResult TrainDiffusion(const DiffusionTrainOptions& options) {
  Require(options.epochs > 0 && options.batch_size > 0, "diffusion training: {} epochs of batches of {}",
          options.epochs, options.batch_size);
  Require(options.drop_caption >= 0 && options.drop_caption < 1, "diffusion training: caption drop rate {} outside "
          "[0, 1)", options.drop_caption);
  Require(options.ema_decay >= 0 && options.ema_decay < 1, "diffusion training: EMA decay {} outside [0, 1)",
          options.ema_decay);
  Require(options.distill_alpha >= 0 && options.distill_alpha <= 1, "diffusion training: distillation weight {} "
          "outside [0, 1]", options.distill_alpha);
  options.qat.Validate();
  DiffusionTrainResult result;
  result.text_model = options.text_model;
  if (result.text_model.empty() && !options.init_from.empty()) {
    result.text_model = (std::filesystem::path(options.init_from) / "text_model").string();
  }
  Require(!result.text_model.empty(), "diffusion training needs an image-text model for the captions");
  const auto start = std::chrono::steady_clock::now();
  const ImageTextData data =
      LoadImageTextData(options.data_dir, options.caption_file, options.tokenizer_dir, options.subset, /*test=*/1);
  const CaptionConditioner conditioner(LoadImageTextModel(result.text_model), data.vocabulary.get());
  torch::manual_seed(options.seed);
  UNetConfig config = options.unet;
  config.context_dim = conditioner.model()->config().text_dim;
  config.image_size = data.image_size;
  // The start and the teacher must read captions of the text tower's width and draw images of the data's size.
  const auto check_fits = [&](const UNet& unet, const std::string& dir) {
    Require(unet->config().context_dim == config.context_dim && unet->config().image_size == config.image_size,
            "{}: the UNet reads {}-wide captions and draws {}-pixel images; the text tower ({}) and the data give {} "
            "and {}", dir, unet->config().context_dim, unet->config().image_size, result.text_model,
            config.context_dim, config.image_size);
  };
  if (!options.init_from.empty()) {
    result.unet = LoadUNet(options.init_from);
    check_fits(result.unet, options.init_from);
  } else {
    result.unet = UNet(config);
  }
  UNet& unet = result.unet;
  const NamedQuantLayers layers = unet->QuantLayers();
  ApplyQatConfig(options.qat, layers, options.quantize_edges ? std::vector<std::string>() : UNetEdgeLayers());
  UNet teacher{nullptr};
  std::unique_ptr<CaptionConditioner> own_teacher_text;
  const CaptionConditioner* teacher_text = &conditioner;
  if (!options.distill_teacher.empty()) {
    teacher = LoadUNet(options.distill_teacher);
    check_fits(teacher, options.distill_teacher);
    // The teacher's captions are encoded by its own text tower; when that is the student's (the usual case: the
    // FP model's folder is both), the student's encoding is reused instead of encoding every batch twice.
    const std::filesystem::path teacher_text_dir = std::filesystem::path(options.distill_teacher) / "text_model";
    std::error_code same_error;
    if (!std::filesystem::equivalent(teacher_text_dir, result.text_model, same_error)) {
      own_teacher_text = std::make_unique<CaptionConditioner>(LoadImageTextModel(teacher_text_dir.string()),
                                                              data.vocabulary.get());
      teacher_text = own_teacher_text.get();
    }
    for (const auto& p : teacher->parameters()) p.requires_grad_(false);
  }
  for (const auto& p : unet->parameters()) result.parameters += p.numel();
  unet->train();
  std::vector<torch::Tensor> average;
  if (options.ema_decay > 0) {
    for (const auto& p : unet->parameters()) average.push_back(p.detach().clone());
  }
  const NoiseSchedule schedule;
  const auto optimizer = MakeAdamW(unet->parameters(), options.learning_rate, options.weight_decay);
  const CaptionGenerator captions(*data.captions, CaptionSplit::kTrain, options.seed);
  const Normalization normalization = data.train.normalization;
  const int64_t steps_per_epoch = (data.train.size() + options.batch_size - 1) / options.batch_size;
  const int64_t total = steps_per_epoch * options.epochs;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(MixSeed(options.seed, 0xD1FF));
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    unet->train();
    const EpochBatches batches(data.train, options.batch_size, MixSeed(options.seed, static_cast<uint64_t>(epoch)),
                               /*shuffle=*/true, /*augment=*/false);
    double loss_sum = 0;
    for (int64_t b = 0; b < batches.size(); ++b, ++step) {
      const Batch batch = batches.Get(b);
      const int64_t rows = batch.labels.size(0);
      // Normalized images back to pixels in [0, 1], then to the model's [-1, 1].
      const torch::Tensor x0 = (batch.images * normalization.std + normalization.mean) * 2 - 1;
      std::vector<std::string> texts;
      const torch::Tensor drop = torch::rand({rows}, generator) < options.drop_caption;
      for (int64_t j = 0; j < rows; ++j) {
        const int64_t index = (epoch * steps_per_epoch + b) * options.batch_size + j;
        texts.push_back(drop[j].item<bool>() ? std::string()
                                             : captions.Caption(static_cast<int>(batch.labels[j].item<int64_t>()), index));
      }
      const TextCondition text = conditioner.Encode(texts);
      const torch::Tensor t = torch::randint(schedule.steps(), {rows}, generator, torch::kLong);
      const torch::Tensor noise = torch::randn(x0.sizes(), generator);
      SetLearningRate(*optimizer, WarmupCosineLearningRate(step, total, std::min<int64_t>(200, total / 10),
                                                           options.learning_rate));
      ScheduleSparsity(options.qat, layers, static_cast<double>(step + 1) / static_cast<double>(steps_per_epoch));
      optimizer->zero_grad();
      const torch::Tensor noised = schedule.AddNoise(x0, noise, t);
      const torch::Tensor predicted = unet->forward(noised, t, text);
      torch::Tensor loss = torch::mse_loss(predicted, noise);
      if (teacher) {
        torch::Tensor soft;
        {
          torch::NoGradGuard no_grad;
          soft = teacher->forward(noised, t, teacher_text == &conditioner ? text : teacher_text->Encode(texts));
        }
        loss = (1 - options.distill_alpha) * loss + options.distill_alpha * torch::mse_loss(predicted, soft);
      }
      loss.backward();
      torch::nn::utils::clip_grad_norm_(unet->parameters(), 1.0);
      optimizer->step();
      if (!average.empty()) {
        torch::NoGradGuard no_grad;
        // Warm-up of the average (as common implementations do): early weights are not averaged in for long.
        const double decay = std::min(options.ema_decay, (1.0 + step) / (10.0 + step));
        const auto parameters = unet->parameters();
        for (size_t i = 0; i < parameters.size(); ++i) average[i].mul_(decay).add_(parameters[i].detach(), 1 - decay);
      }
      loss_sum += loss.item<double>();
      if (options.on_line && ((b + 1) % 20 == 0 || b + 1 == batches.size())) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        options.on_line(TrainingProgressLine(epoch + 1, options.epochs, b + 1, batches.size(),
                                             loss_sum / static_cast<double>(b + 1), seconds, step, total));
      }
    }
    result.epoch_loss.push_back(loss_sum / static_cast<double>(batches.size()));
  }
  if (!average.empty()) {
    torch::NoGradGuard no_grad;
    const auto parameters = unet->parameters();
    for (size_t i = 0; i < parameters.size(); ++i) parameters[i].copy_(average[i]);
  }
  unet->eval();
  result.sparsity = MeasuredSparsity(layers);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace atq
