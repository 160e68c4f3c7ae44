// Pretraining a GPT-2 or Llama model from scratch on a text corpus with the GPT-2 tokenizer: random windows of
// the training tokens, AdamW, linear warm-up then cosine decay, gradient clipping, periodic validation loss,
// the best checkpoint kept. Checkpoints are Hugging Face folders transformers loads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/lm_config.h"

namespace atq {

struct LmTrainOptions {
  LmConfig model;               // architecture and sizes; vocab_size and BOS/EOS come from the tokenizer
  std::string train_text;       // UTF-8 text files
  std::string valid_text;
  std::string tokenizer_dir;    // encoder.json + vocab.bpe
  int64_t ctx = 256;            // tokens per training window
  int64_t batch_size = 16;      // windows per step
  int64_t steps = 2000;
  int64_t warmup_steps = 100;
  double learning_rate = 6e-4;  // peak
  double min_learning_rate = 6e-5;
  double weight_decay = 0.1;
  double beta2 = 0.95;
  double grad_clip = 1.0;       // max global gradient norm; 0: none
  int64_t eval_interval = 200;  // steps between validations (and at the end)
  int64_t eval_windows = 64;    // validation windows of ctx tokens (0: the whole validation text)
  uint64_t seed = 1;
  std::string device = "cpu";   // "cpu" or "cuda"
  std::string out_dir;          // OUT (last step), OUT/best (lowest validation loss), OUT/metrics.json
};

struct LmEvalPoint {
  int64_t step = 0;             // steps done
  double train_loss = 0;        // mean over the steps since the previous point
  double valid_loss = 0;
  double learning_rate = 0;
  double tokens_per_second = 0;  // training tokens since the previous point
};

struct LmTrainResult {
  std::vector<LmEvalPoint> evals;
  int64_t best_step = 0;
  double best_valid_loss = 0;
  int64_t train_tokens = 0;
  int64_t valid_tokens = 0;
  double seconds = 0;
  nlohmann::json ToJson() const;
};

LmTrainResult TrainLanguageModel(const LmTrainOptions& options);

}  // namespace atq
