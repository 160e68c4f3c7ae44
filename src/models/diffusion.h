// A small text-to-image diffusion model: a UNet that predicts the noise of a noised image from the timestep and a
// caption, the caption read by the image-text model's text tower (models/image_text.h, frozen), and the samplers.
//
// UNet (28x28 single-channel by default, width C):
//   conv_in 1->C | down0: Res(C->C) @28, conv stride 2 | down1: Res(C->2C) + cross-attention @14, conv stride 2 |
//   down2: Res(2C->2C) + cross-attention @7 | mid: Res, cross-attention, Res @7 |
//   up2: Res(4C->2C) + cross-attention @7, nearest x2 + conv | up1: Res(4C->2C) + cross-attention @14, x2 + conv |
//   up0: Res(2C->C) @28 | GroupNorm, SiLU, conv_out C->1
// Every residual block adds a projection of the conditioning vector (sinusoidal timestep through an MLP, plus the
// caption's pooled state through a linear map); the cross-attention blocks let each position attend to the
// caption's token states (padding masked). Every weight layer is a QuantConv2d / QuantLinear, so the vision PTQ
// (per-channel weights, calibrated input quantizers) applies unchanged.
//
// Noise: DDPM (Ho et al. 2020) with the cosine schedule (Nichol & Dhariwal 2021) over T = 1000 steps, trained on
// the noise; sampling by DDIM (Song et al. 2021, eta = 0) on an evenly spaced subset of the steps, with
// classifier-free guidance (Ho & Salimans 2022): eps = eps(uncond) + w * (eps(caption) - eps(uncond)), the
// unconditional branch reading the empty caption.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "formats/quant_type.h"
#include "models/classifier.h"
#include "models/image_text.h"
#include "models/packed_product.h"
#include "models/quant_layers.h"

namespace atq {

struct UNetConfig {
  int64_t image_size = 28;  // a multiple of 4
  int64_t in_channels = 1;
  int64_t channels = 32;     // C
  int64_t context_dim = 64;  // width of the caption's token states (the text tower's)
  int64_t heads = 4;
  int64_t time_dim = 128;    // the conditioning vector
};
nlohmann::json UNetConfigToJson(const UNetConfig& config);
UNetConfig UNetConfigFromJson(const nlohmann::json& json, const std::string& what);

class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t in, int64_t out, int64_t cond_dim);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  QuantConv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};
  QuantLinear cond_{nullptr};
};
TORCH_MODULE(ResBlock);

// Positions of a feature map attend to the caption's token states: x + proj(attn(norm(x), context)).
class SpatialCrossAttentionImpl : public torch::nn::Module {
 public:
  SpatialCrossAttentionImpl(int64_t channels, int64_t context_dim, int64_t heads);
  // x [B, C, H, W], context [B, T, D], mask [B, T] (true: a real token)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& mask);

  // The inputs of the two activation-by-activation products, for W8A8 and lower (identity until calibrated).
  ActivationQuantizer query_quant{nullptr}, key_quant{nullptr}, probs_quant{nullptr}, value_quant{nullptr};

 private:
  int64_t heads_;
  torch::nn::GroupNorm norm_{nullptr};
  QuantLinear query_{nullptr}, key_value_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(SpatialCrossAttention);

// The caption as the UNet reads it: token states, which of them are real, and their mean.
struct TextCondition {
  torch::Tensor states;  // [B, T, context_dim]
  torch::Tensor mask;    // [B, T] bool
  torch::Tensor pooled;  // [B, context_dim]
};

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(const UNetConfig& config);
  // x [B, 1, S, S] noised images, t [B] int64 timesteps in [0, T) -> predicted noise [B, 1, S, S]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const TextCondition& text);
  NamedQuantLayers QuantLayers();
  const UNetConfig& config() const { return config_; }

 private:
  UNetConfig config_;
  QuantLinear time1_{nullptr}, time2_{nullptr}, text_cond_{nullptr};
  QuantConv2d conv_in_{nullptr}, down0_{nullptr}, down1_{nullptr}, up2_conv_{nullptr}, up1_conv_{nullptr},
      conv_out_{nullptr};
  ResBlock res_d0_{nullptr}, res_d1_{nullptr}, res_d2_{nullptr}, res_m1_{nullptr}, res_m2_{nullptr},
      res_u2_{nullptr}, res_u1_{nullptr}, res_u0_{nullptr};
  SpatialCrossAttention attn_d1_{nullptr}, attn_d2_{nullptr}, attn_m_{nullptr}, attn_u2_{nullptr},
      attn_u1_{nullptr};
  torch::nn::GroupNorm norm_out_{nullptr};
};
TORCH_MODULE(UNet);

// The cosine noise schedule: alpha_bar(t) for t in [0, T).
class NoiseSchedule {
 public:
  explicit NoiseSchedule(int64_t steps = 1000);
  int64_t steps() const { return alpha_bar_.size(0); }
  const torch::Tensor& alpha_bar() const { return alpha_bar_; }  // [T] float64
  // sqrt(a) x0 + sqrt(1 - a) noise with a = alpha_bar(t) per row.
  torch::Tensor AddNoise(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t) const;
  // `count` DDIM timesteps, evenly spaced from T - 1 down to 0.
  std::vector<int64_t> DdimTimesteps(int64_t count) const;

 private:
  torch::Tensor alpha_bar_;
};

// Reads captions for the UNet with a frozen text tower (the image-text model's), and the empty caption.
class CaptionConditioner {
 public:
  CaptionConditioner(ImageTextModel text_model, const CaptionVocabulary* vocabulary);
  TextCondition Encode(const std::vector<std::string>& captions) const;
  const ImageTextModel& model() const { return model_; }

 private:
  mutable ImageTextModel model_;  // frozen; mutable only because torch's forward passes are not const
  const CaptionVocabulary* vocabulary_;
};

struct SamplerOptions {
  int64_t steps = 50;       // DDIM steps
  double guidance = 3.0;    // classifier-free guidance weight w (1: the conditional prediction alone)
  uint64_t seed = 0;        // the initial noise of sample i depends on (seed, i) only
  int64_t batch = 100;      // images per UNet batch
  // Before each UNet call: the timestep (models calibrated per timestep range switch their quantizers here).
  std::function<void(int64_t)> on_timestep;
};

// DDIM samples [N, 1, S, S] in [-1, 1] for `text` (N rows; the unconditional branch uses `empty`, one row).
torch::Tensor SampleDdim(UNetImpl& unet, const NoiseSchedule& schedule, const TextCondition& text,
                         const TextCondition& empty, const SamplerOptions& options);

// Samples in [-1, 1] -> 8-bit gray pixels.
torch::Tensor ToPixels(const torch::Tensor& samples);  // uint8 [N, S, S]

// DIR/config.json ({"model": "text-to-image", "unet": ..., "text_model": the image-text checkpoint it reads
// captions with, plus `extra`) and DIR/model.safetensors (the UNet's tensors), atomically.
void SaveUNet(const std::string& dir, UNetImpl& unet, const nlohmann::json& extra);
UNet LoadUNet(const std::string& dir, nlohmann::json* config_json = nullptr);

// The UNet as one packed file (models/packed_module.h, format "atq-packed-text-to-image/1", metadata "atq.config"
// = what config.json holds plus `extra`): its ternary layers as `type` (t2 or t1.6), the rest float32. Written
// atomically; returns the bytes. Throws atq::Error when no layer is ternary.
int64_t ExportPackedUNet(UNetImpl& unet, const nlohmann::json& extra, QuantType type, const std::string& path);
bool IsPackedUNet(const std::string& path);
// A text-to-image folder's UNet, or a packed UNet file whose packed layers run as `run` says.
UNet LoadUNetAny(const std::string& path, PackedRun run, nlohmann::json* config_json = nullptr);

}  // namespace atq
