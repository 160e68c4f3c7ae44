// Training of the text-to-image UNet (models/diffusion.h) on Fashion-MNIST with seeded training captions read by
// a trained image-text model's text tower (frozen): the DDPM noise-prediction loss at uniformly drawn timesteps,
// captions dropped to the empty caption at a rate (so classifier-free guidance has an unconditional model),
// AdamW with warm-up and cosine decay, and an exponential moving average of the weights (what is saved and
// sampled, as diffusion models are).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/diffusion.h"

namespace atq {

struct DiffusionTrainOptions {
  std::string data_dir, caption_file, tokenizer_dir;
  std::string text_model;  // an image-text checkpoint folder (its text tower reads the captions)
  UNetConfig unet;         // context_dim and image_size come from the text model and the data
  int64_t epochs = 10;
  int64_t batch_size = 128;
  double learning_rate = 1e-3;
  double weight_decay = 0.0;
  double drop_caption = 0.1;  // share of training captions replaced by the empty caption
  double ema_decay = 0.999;   // 0: no moving average (the last weights are kept)
  uint64_t seed = 0;
  int64_t subset = 0;         // first N training images (0: all)
  std::function<void(const std::string&)> on_line;  // progress
};

struct DiffusionTrainResult {
  UNet unet{nullptr};          // the moving average when ema_decay > 0, eval mode
  std::vector<double> epoch_loss;
  double seconds = 0;
  int64_t parameters = 0;
};

DiffusionTrainResult TrainDiffusion(const DiffusionTrainOptions& options);

}  // namespace atq
