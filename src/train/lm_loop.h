// The one training loop of atq's language models, shared by pretraining (train/lm_trainer.h) and
// quantization-aware training (train/lm_qat.h): random windows of the training tokens, AdamW, linear warm-up then
// cosine decay, gradient clipping, periodic validation, the best model kept, progress with tokens/s and ETA,
// metrics JSON and a plot, and a resume state that continues a run exactly (weights, optimizer, schedule, data
// position and random state).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "models/causal_lm.h"

namespace atq {

struct LmLoopOptions {
  int64_t ctx = 256;            // tokens per training window
  int64_t batch_size = 16;      // windows per step
  int64_t steps = 2000;
  int64_t warmup_steps = 100;
  double learning_rate = 6e-4;  // peak
  double min_learning_rate = 6e-5;
  double weight_decay = 0.1;
  double beta2 = 0.95;
  double grad_clip = 1.0;       // max global gradient norm; 0: none
  int64_t eval_interval = 200;  // steps between validations, best-model checks and resume states (and at the end)
  int64_t eval_windows = 64;    // validation windows of ctx tokens (0: the whole validation text)
  uint64_t seed = 1;
  std::string out_dir;          // OUT/metrics.json, OUT/validation.png, OUT/resume/; empty: nothing written
  bool resume = false;          // continue from OUT/resume when a state is there
  int64_t stop_after = 0;       // stop after this many steps of this call, leaving a resume state (0: run to the end)
  std::string label = "train";  // progress and log lines
  // Data parallel (train/data_parallel.h): each worker takes its rows of every global batch of batch_size windows
  // and its share of the validation windows, gradients and losses are averaged over the workers, and only rank 0
  // writes. Null: this process alone.
  class DataParallel* parallel = nullptr;
};

struct LmEvalPoint {
  int64_t step = 0;             // steps done
  int64_t tokens = 0;           // training tokens seen
  double train_loss = 0;        // mean over the steps since the previous point
  double valid_loss = 0;
  double learning_rate = 0;
  double tokens_per_second = 0;  // training tokens since the previous point
  nlohmann::json extra;          // what the caller adds (LmLoopHooks::describe)
};

struct LmTrainResult {
  std::vector<LmEvalPoint> evals;
  int64_t best_step = 0;
  double best_valid_loss = 0;
  int64_t train_tokens = 0;  // tokens of the training text
  int64_t valid_tokens = 0;
  int64_t resumed_from = 0;  // the step a resumed run continued from (0: a fresh run)
  double seconds = 0;
  int workers = 1;               // data-parallel processes
  double communication_seconds = 0;  // inside all-reduces (data parallel), this call
  nlohmann::json ToJson() const;
};

// What a caller plugs into the loop.
struct LmLoopHooks {
  // The loss to minimize on a batch of windows [B, ctx + 1] (inputs and shifted targets) at `step` (0-based; the
  // caller's schedules follow it). Default: next-token cross-entropy of the model.
  std::function<torch::Tensor(const torch::Tensor& batch, int64_t step)> loss;
  // Called before each step's forward pass (schedules such as the sparsity ramp).
  std::function<void(int64_t step)> before_step;
  // Writes the model to a folder: OUT/best at each new best validation loss, OUT at the end. Empty: nothing.
  std::function<void(const std::string& dir)> save;
  // Fields added to each evaluation point (measured sparsity, ...).
  std::function<nlohmann::json()> describe;
  // Tensors trained beside the model's parameters (QAT's learned scales), by name: in the optimizer (no weight
  // decay on 1-D ones), averaged across workers, clipped with the rest and kept in the resume state.
  std::vector<std::pair<std::string, torch::Tensor>> extra_parameters;
};

// Mean next-token cross-entropy over the first `windows` consecutive windows of ctx + 1 tokens of `tokens`,
// in eval mode and without gradients (the model is put back in train mode). With `parallel`, each worker scores
// every world_size-th window and the sums are combined.
double WindowLoss(CausalLmImpl& model, const torch::Tensor& tokens, int64_t ctx, int64_t windows, int64_t batch_size,
                  class DataParallel* parallel = nullptr);

// Trains `model` (its parameters that require gradients) on `train_tokens`, validating on `valid_tokens`
// (int64 [n]). `run_options` is stored in OUT/training.json. Throws atq::Error for texts shorter than a window,
// a resume state of another run (other options or model), or a failed write.
LmTrainResult RunLmTraining(CausalLmImpl& model, const torch::Tensor& train_tokens, const torch::Tensor& valid_tokens,
                            const LmLoopOptions& options, const LmLoopHooks& hooks,
                            const nlohmann::json& run_options = {});

}  // namespace atq
