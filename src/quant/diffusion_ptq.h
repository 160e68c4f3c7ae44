// Post-training quantization of a text-to-image model (models/diffusion.h): the UNet's and the text tower's weights
// on the vision PTQ's grids (uniform b-bit, MSE clip, per output channel), and b-bit activations at every weight
// layer's input and at the inputs of the attention's two activation products (queries, keys, values,
// probabilities).
//
// A diffusion model's activations change with the noise level: early, nearly pure-noise steps and late, nearly
// clean ones give the same layer very different ranges (Q-Diffusion, Li et al. 2023; PTQ4DM, Shang et al. 2023).
// So the UNet's activation grids are calibrated per range of timesteps: calibration trajectories are drawn by
// the DDIM sampler itself (weights already quantized, activations observed), the quantizers observe one range of
// timesteps at a time, and at sampling time the grids switch as the sampler enters each range
// (SamplerOptions::on_timestep). The text tower runs once per caption, before any timestep, so it has one grid.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/captions.h"
#include "models/activation_quant.h"
#include "models/diffusion.h"
#include "models/image_text.h"
#include "quant/vision_ptq.h"

namespace atq {

struct DiffusionPtqOptions {
  VisionPtqOptions ptq;               // bits (every layer alike), per_channel, activation_range, percentile
  int64_t timestep_ranges = 4;        // equal ranges of [0, T), each with its own activation grids
  int64_t calibration_prompts = 64;   // training-split wordings, classes in turn (never the held-out ones)
  SamplerOptions sampler;             // steps and guidance of the calibration trajectories (their seed is offset)
  uint64_t caption_seed = 0;
  bool quantize_text = true;          // the text tower too (else it stays float)
  // Activation quantizers whose path matches this regular expression (ECMAScript, anywhere in the path, e.g.
  // "probs_quant" or "^res_u") stay float: mixed precision by site, and how a site's share of the error is found.
  std::string float_activations;
  // SmoothQuant's migration strength alpha in (0, 1] (0: off; ActivationQuantizerImpl::SetChannelDivisor):
  // before the weights are quantized, every layer whose input is quantized gets the channel divisors
  // s_c = max|x_c|^alpha / max|W_c|^(1 - alpha), from its float inputs over the calibration trajectories (every
  // timestep), and its weight's input channel c is multiplied by s_c.
  double smooth = 0;
};

// The activation grids of a set of quantizers, one set per range of timesteps.
class TimestepActivationGrids {
 public:
  using Quantizers = std::vector<std::pair<std::string, ActivationQuantizerImpl*>>;
  TimestepActivationGrids(Quantizers quantizers, int64_t ranges, int64_t schedule_steps);

  int64_t ranges() const { return static_cast<int64_t>(grids_.size()); }
  int64_t RangeOf(int64_t t) const;  // t in [0, schedule_steps)
  // Keeps every quantizer's present grid as range r's.
  void Store(int64_t range);
  bool Stored(int64_t range) const { return !grids_[static_cast<size_t>(range)].empty(); }
  // Sets every quantizer to the grid of t's range (a sampler's on_timestep).
  void Select(int64_t t);
  // Per range: its timesteps [first, last] and each quantizer's bits, scale and sign.
  nlohmann::json ToJson() const;

 private:
  struct Grid {
    int bits = 0;
    double scale = 1;
    bool unsigned_grid = false;
    int64_t zero_point = 0;
  };
  Quantizers quantizers_;
  int64_t schedule_steps_;
  std::vector<std::vector<Grid>> grids_;
  int64_t selected_ = -1;
};

struct DiffusionPtqResult {
  VisionPtqReport unet, text;  // weights (bits, error, packed bytes) per layer
  std::shared_ptr<TimestepActivationGrids> grids;  // null when activations stay float
  int64_t float_bytes = 0;     // the quantized layers as float32 (weights and biases)
  int64_t divisor_bytes = 0;   // smoothing's channel divisors (float32), included in the reports' packed bytes
  double seconds = 0;
  // The sampler's hook that switches the grids (a no-op for float activations).
  std::function<void(int64_t)> OnTimestep() const;
  nlohmann::json ToJson() const;
};

// Every ActivationQuantizer under `module`, by path.
TimestepActivationGrids::Quantizers ActivationQuantizersOf(torch::nn::Module& module);

// Quantizes `unet` and (options.quantize_text) the layers of `text_tower` that compute token states in place, for
// sampling (its projection into the image-text embedding space is not read by the UNet and stays as it was). The
// text tower must be the one `conditioner` reads captions with. Throws atq::Error for bad widths, a layer that was
// trained quantized, or a calibration whose steps do not visit every timestep range.
DiffusionPtqResult QuantizeTextToImage(UNetImpl& unet, TextEncoderImpl& text_tower,
                                       const CaptionConditioner& conditioner, const CaptionSet& captions,
                                       const DiffusionPtqOptions& options);

}  // namespace atq
