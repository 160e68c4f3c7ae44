// Quantization-aware training of language models: every linear layer of the blocks fake-quantized on its grid
// (ternary per channel or group, llama.cpp's tq2_0/tq1_0 blocks, uniform 2..8 bits, per-layer plans from a recipe
// or mixed precision) with the straight-through estimators of grid/fake_quant.h, whose forward value is the
// packer's own rounding; progressive sparsity; distillation from a full-precision teacher; trained through the
// shared loop (train/lm_loop.h) and written as atq's packed checkpoint (and a GGUF) holding exactly the trained
// model's quantized weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/quant_type.h"
#include "grid/fake_quant.h"
#include "quant/lm_options.h"
#include "train/lm_loop.h"

namespace atq {

struct LmQatOptions {
  // Where the student starts: a Hugging Face folder, a GGUF, or atq's packed checkpoint (read dequantized, so a
  // PTQ result such as GPTQ ternary is the initialization).
  std::string model;
  std::string tokenizer;  // overrides the model's own (LmLoadOptions::tokenizer)
  // The full-precision teacher for distillation: empty for the starting checkpoint, "none" for no distillation.
  std::string teacher;
  // Each block linear layer's grid: quant.recipe for all, quant.layers by module name, keep = full precision;
  // mixed precision (quant.mixed_candidates) chooses per layer first. Methods and calibration settings are PTQ's
  // and not used.
  LmQuantizeOptions quant;
  // Progressive sparsity for ternary layers whose threshold rule is a sparsity target: 0 at step 0 rising to the
  // target at ramp_steps (0: the target from the start). Thresholds follow each layer's rule at every step.
  int64_t ramp_steps = 0;
  SparsityRamp ramp = SparsityRamp::kLinear;
  double ste_clip = 2.0;  // LayerQuantConfig::ste_clip
  // Learned scales (grid/fake_quant.h, LearnedScales): every quantized layer's span scales are trained from the
  // grid's fit by LSQ's gradient, the codes still chosen by the grid's rule; the checkpoints store the trained
  // scales. Ternary and symmetric uniform grids.
  bool learn_scales = false;
  // Residual precision boosting for atq's ternary grids: in every ternary layer this share of the weights, those
  // the grid rounds worst, is kept at float16 precision (trained as such) and stored as a sparse residual beside
  // the codes, 6 bytes each, counted in the bits per weight. A GGUF cannot hold it.
  double rpb_fraction = 0;
  // Distillation: alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * next-token cross-entropy,
  // plus hidden_weight * the mean over blocks of ||h_student - h_teacher||^2 / ||h_teacher||^2.
  double temperature = 2.0;
  double distill_alpha = 0.5;
  double hidden_weight = 0;
  std::vector<std::string> train_texts;  // UTF-8 text files, concatenated
  std::string valid_text;
  LmLoopOptions loop;  // out_dir: OUT (last step), OUT/best, OUT/metrics.json, OUT/qat_report.json
  QuantType float_type = QuantType::kF32;  // the packed checkpoints' unquantized tensors (f32: exactly as trained)
  std::string gguf_path;                   // also write the best model as a GGUF here; empty: none
  std::optional<QuantType> gguf_type;      // GGUF type of the quantized layers; nullopt: closest to each grid
  QuantType gguf_embeddings = QuantType::kF32;
};

struct LmQatResult {
  LmTrainResult training;
  double teacher_valid_loss = -1;  // the teacher (or the start in full precision) on the validation windows
  double start_valid_loss = 0;     // the student fake-quantized before training (round to nearest on its grid)
  int64_t quantized_layers = 0;
  int64_t quantized_weights = 0;
  double bits_per_weight = 0;      // over the quantized layers, scales included
  double sparsity = 0;             // share of zero codes over the ternary layers, after training
  int64_t boosted_weights = 0;     // kept exactly by RPB
  nlohmann::json layers;           // per layer: grid, bits per weight, sparsity (and learned scales' change)
  nlohmann::json gguf;             // the GGUF's report, when written
  nlohmann::json ToJson() const;
};

// Trains as `options` say. Throws atq::Error naming the file or layer at fault before any training: a grid a
// layer cannot take (tq2_0 needs rows of a multiple of 256 weights), a teacher with another vocabulary, texts
// shorter than a window.
LmQatResult TrainQuantizationAware(const LmQatOptions& options);

}  // namespace atq
