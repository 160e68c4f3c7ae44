// The language-model pretraining loop.
#include "train/lm_trainer.h"

#include <chrono>
#include <filesystem>
#include <random>

#include <fmt/format.h>
#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/tokenizer.h"
#include "models/causal_lm.h"
#include "models/lm_hf_writer.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"

namespace atq {
namespace {

// Mean cross-entropy over consecutive windows of ctx + 1 tokens (inputs and shifted targets).
double ValidationLoss(CausalLmImpl& model, const torch::Tensor& tokens, int64_t ctx, int64_t windows,
                      int64_t batch_size, torch::Device device) {
  torch::NoGradGuard no_grad;
  model.eval();
  double loss_sum = 0;
  int64_t counted = 0;
  for (int64_t first = 0; first < windows; first += batch_size) {
    std::vector<torch::Tensor> rows;
    for (int64_t w = first; w < std::min(windows, first + batch_size); ++w) rows.push_back(tokens.slice(0, w * ctx, w * ctx + ctx + 1));
    const torch::Tensor batch = torch::stack(rows).to(device);
    const torch::Tensor logits = model.forward(batch.slice(1, 0, ctx));
    const torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32), batch.slice(1, 1).reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    loss_sum += loss.item<double>();
    counted += batch.size(0) * ctx;
  }
  model.train();
  return loss_sum / static_cast<double>(counted);
}

nlohmann::json OptionsJson(const LmTrainOptions& o) {
  return {{"model", HfConfigJson(o.model)}, {"train_text", o.train_text}, {"valid_text", o.valid_text},
          {"tokenizer", o.tokenizer_dir},  {"ctx", o.ctx},               {"batch_size", o.batch_size},
          {"steps", o.steps},              {"warmup_steps", o.warmup_steps}, {"learning_rate", o.learning_rate},
          {"min_learning_rate", o.min_learning_rate}, {"weight_decay", o.weight_decay}, {"beta2", o.beta2},
          {"grad_clip", o.grad_clip},      {"eval_interval", o.eval_interval}, {"eval_windows", o.eval_windows},
          {"seed", o.seed},                {"device", o.device}};
}

}  // namespace

nlohmann::json LmTrainResult::ToJson() const {
  nlohmann::json points = nlohmann::json::array();
  for (const LmEvalPoint& p : evals) {
    points.push_back({{"step", p.step},
                      {"train_loss", p.train_loss},
                      {"valid_loss", p.valid_loss},
                      {"valid_perplexity", std::exp(p.valid_loss)},
                      {"learning_rate", p.learning_rate},
                      {"tokens_per_second", p.tokens_per_second}});
  }
  return {{"evals", points},           {"best_step", best_step},       {"best_valid_loss", best_valid_loss},
          {"train_tokens", train_tokens}, {"valid_tokens", valid_tokens}, {"seconds", seconds}};
}

LmTrainResult TrainLanguageModel(const LmTrainOptions& options) {
  Require(options.ctx >= 2 && options.batch_size >= 1 && options.steps >= 1, "train-lm: ctx >= 2, batch >= 1 and steps >= 1 needed");
  Require(options.eval_interval >= 1, "train-lm: eval interval must be at least 1 step");
  const auto tokenizer = LoadGpt2Tokenizer(options.tokenizer_dir + "/encoder.json", options.tokenizer_dir + "/vocab.bpe");
  LmConfig config = options.model;
  config.vocab_size = tokenizer->vocab_size();
  config.bos_id = tokenizer->bos_id();
  config.eos_id = tokenizer->eos_id();
  if (config.arch == LmArch::kGpt2) config.max_positions = std::max(config.max_positions, options.ctx);
  ValidateLmConfig(config, "train-lm model");

  torch::Device device = torch::kCPU;
  if (options.device == "cuda") {
    Require(torch::cuda::is_available(), "train-lm --device cuda: this libtorch sees no CUDA device");
    device = torch::kCUDA;
  }
  for (const std::string& text : {options.train_text, options.valid_text}) {
    Require(std::filesystem::exists(text), "{}: missing (build the corpus with `atq corpus`, which scripts/setup.sh runs)",
            text);
  }
  const std::vector<int32_t> train_ids = EncodeFile(*tokenizer, options.train_text);
  const std::vector<int32_t> valid_ids = EncodeFile(*tokenizer, options.valid_text);
  const auto as_tensor = [](const std::vector<int32_t>& ids) {
    return torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64);
  };
  const torch::Tensor train_tokens = as_tensor(train_ids), valid_tokens = as_tensor(valid_ids);
  const int64_t train_count = train_tokens.numel();
  Require(train_count > options.ctx + 1, "{}: {} tokens, fewer than one window of {}", options.train_text,
          train_count, options.ctx + 1);
  int64_t eval_windows = (valid_tokens.numel() - 1) / options.ctx;
  if (options.eval_windows > 0) eval_windows = std::min(eval_windows, options.eval_windows);
  Require(eval_windows > 0, "{}: {} tokens, fewer than one validation window of {}", options.valid_text,
          valid_tokens.numel(), options.ctx + 1);

  torch::manual_seed(options.seed);
  auto model = MakeCausalLm(config);
  model->to(device);
  model->train();
  auto optimizer = MakeAdamW(model->parameters(), options.learning_rate, options.weight_decay, 0.9, options.beta2);
  LogInfo("train-lm {}: {:.2f} M parameters, {} train / {} valid tokens, {} steps of {} x {} tokens on {}",
          LmArchName(config.arch), config.ParameterCount() / 1e6, train_count, valid_tokens.numel(), options.steps,
          options.batch_size, options.ctx, options.device);

  const std::filesystem::path out(options.out_dir);
  if (!options.out_dir.empty()) {
    std::filesystem::create_directories(out);
    WriteFileAtomically((out / "training.json").string(), OptionsJson(options).dump(2) + "\n");
  }
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<int64_t> offset(0, train_count - options.ctx - 1);
  LmTrainResult result;
  result.train_tokens = train_count;
  result.valid_tokens = valid_tokens.numel();
  Progress progress("train-lm", options.steps, "steps");
  double loss_sum = 0;
  int64_t loss_steps = 0;
  auto since = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < options.steps; ++step) {
    const double learning_rate = WarmupCosineLearningRate(step, options.steps, options.warmup_steps,
                                                          options.learning_rate, options.min_learning_rate);
    SetLearningRate(*optimizer, learning_rate);
    std::vector<torch::Tensor> rows;
    for (int64_t b = 0; b < options.batch_size; ++b) {
      const int64_t begin = offset(rng);
      rows.push_back(train_tokens.slice(0, begin, begin + options.ctx + 1));
    }
    const torch::Tensor batch = torch::stack(rows).to(device);  // [B, ctx + 1]
    optimizer->zero_grad();
    const torch::Tensor logits = model->forward(batch.slice(1, 0, options.ctx));  // [B, ctx, V]
    const torch::Tensor loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                                    batch.slice(1, 1).reshape({-1}));
    loss.backward();
    if (options.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), options.grad_clip);
    optimizer->step();
    const double step_loss = loss.item<double>();
    loss_sum += step_loss;
    ++loss_steps;
    const double elapsed = progress.ElapsedSeconds();
    progress.Advance(1, fmt::format("loss {:.4f} | lr {:.2e} | {:.0f} tokens/s", step_loss, learning_rate,
                                    elapsed > 0 ? (step + 1) * options.batch_size * options.ctx / elapsed : 0.0));

    if ((step + 1) % options.eval_interval == 0 || step + 1 == options.steps) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
      LmEvalPoint point;
      point.step = step + 1;
      point.train_loss = loss_sum / static_cast<double>(loss_steps);
      point.valid_loss = ValidationLoss(*model, valid_tokens, options.ctx, eval_windows, options.batch_size, device);
      point.learning_rate = learning_rate;
      point.tokens_per_second = seconds > 0 ? loss_steps * options.batch_size * options.ctx / seconds : 0;
      result.evals.push_back(point);
      LogInfo("step {}/{}: train loss {:.4f}, valid loss {:.4f} (perplexity {:.2f}), {:.0f} tokens/s", point.step,
              options.steps, point.train_loss, point.valid_loss, std::exp(point.valid_loss), point.tokens_per_second);
      const bool best = result.best_step == 0 || point.valid_loss < result.best_valid_loss;
      if (best) {
        result.best_step = point.step;
        result.best_valid_loss = point.valid_loss;
      }
      if (!options.out_dir.empty()) {
        if (best) SaveHuggingFace(*model, (out / "best").string(), options.tokenizer_dir);
        WriteFileAtomically((out / "metrics.json").string(), result.ToJson().dump(2) + "\n");
      }
      loss_sum = 0;
      loss_steps = 0;
      since = std::chrono::steady_clock::now();
    }
  }
  progress.Finish();
  result.seconds = progress.ElapsedSeconds();
  if (!options.out_dir.empty()) {
    SaveHuggingFace(*model, out.string(), options.tokenizer_dir);
    WriteFileAtomically((out / "metrics.json").string(), result.ToJson().dump(2) + "\n");
  }
  return result;
}

}  // namespace atq
