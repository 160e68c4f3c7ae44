// Training of the text-to-image UNet (models/diffusion.h) on Fashion-MNIST with seeded training captions read by
// a trained image-text model's text tower (frozen): the DDPM noise-prediction loss at uniformly drawn timesteps,
// captions dropped to the empty caption at a rate (so classifier-free guidance has an unconditional model),
// AdamW with warm-up and cosine decay, and an exponential moving average of the weights (what is saved and
// sampled, as diffusion models are). Quantization-aware training (ternary by ATQ, or uniform b-bit) runs the
// classifier QAT's grids and sparsity schedule (train/qat_schedule.h) on the UNet's layers, from a trained UNet and
// distilled from a full-precision one: the student's noise prediction is pulled towards the teacher's on the same
// noised image, timestep and caption.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/diffusion.h"
#include "train/qat_schedule.h"

namespace atq {

struct DiffusionTrainOptions {
  std::string data_dir, caption_file, tokenizer_dir;
  std::string text_model;  // an image-text checkpoint folder (its text tower reads the captions); with init_from
                           // and left empty: init_from/text_model
  UNetConfig unet;         // context_dim and image_size come from the text model and the data
  int64_t epochs = 10;
  int64_t batch_size = 128;
  double learning_rate = 1e-3;
  double weight_decay = 0.0;
  double drop_caption = 0.1;  // share of training captions replaced by the empty caption
  double ema_decay = 0.999;   // 0: no moving average (the last weights are kept)
  uint64_t seed = 0;
  int64_t subset = 0;         // first N training images (0: all)

  // Quantization-aware training: every layer on this grid but conv_in and conv_out (the one-channel image's input
  // and output, 9·C weights each, kept full precision as the classifiers keep their first layer) unless
  // quantize_edges.
  WeightQatOptions qat;
  bool quantize_edges = false;
  std::string init_from;        // a text-to-image folder whose UNet is the start (else random weights)
  std::string distill_teacher;  // a text-to-image folder (full precision) whose noise predictions are soft targets
  // loss = (1 - alpha) * |eps - noise|^2 + alpha * |eps - eps_teacher|^2 (the teacher reads the caption with its
  // own folder's text tower)
  double distill_alpha = 0.5;

  std::function<void(const std::string&)> on_line;  // progress
};

struct DiffusionTrainResult {
  UNet unet{nullptr};          // the moving average when ema_decay > 0, eval mode
  std::vector<double> epoch_loss;
  double seconds = 0;
  int64_t parameters = 0;
  double sparsity = 0;         // share of zero codes over the ternary layers (0 without any)
  std::string text_model;      // the text tower the UNet was trained with (options.text_model resolved)
};

// The UNet layers a QAT run keeps full precision unless quantize_edges.
std::vector<std::string> UNetEdgeLayers();

DiffusionTrainResult TrainDiffusion(const DiffusionTrainOptions& options);

}  // namespace atq
