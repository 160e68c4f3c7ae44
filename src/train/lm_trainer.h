// Pretraining a language model from scratch on a text corpus with the GPT-2 tokenizer, through the shared loop
// (train/lm_loop.h). Checkpoints are Hugging Face folders transformers loads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "io/tokenizer.h"
#include "models/lm_config.h"
#include "train/lm_loop.h"

namespace atq {

struct LmTrainOptions {
  LmConfig model;               // architecture and sizes; vocab_size and BOS/EOS come from the tokenizer
  std::string train_text;       // UTF-8 text files
  std::string valid_text;
  std::string tokenizer_dir;    // encoder.json + vocab.bpe
  std::string device = "cpu";   // "cpu" or "cuda"
  // Windows, schedule, validation; out_dir: OUT (last step), OUT/best (lowest validation loss), OUT/metrics.json.
  LmLoopOptions loop;
};

// The tokens of a text file, int64 [n]. Throws atq::Error naming a missing file.
torch::Tensor TokenTensor(const Tokenizer& tokenizer, const std::string& path);

LmTrainResult TrainLanguageModel(const LmTrainOptions& options);

}  // namespace atq
