// The language-model pretraining loop.
#include "train/lm_trainer.h"

#include <filesystem>

#include <fmt/format.h>
#include <torch/torch.h>

#include "io/tokenizer.h"
#include "models/causal_lm.h"
#include "models/lm_hf_writer.h"
#include "util/error.h"
#include "util/log.h"

namespace atq {
namespace {

nlohmann::json OptionsJson(const LmTrainOptions& o) {
  const LmLoopOptions& l = o.loop;
  return {{"model", HfConfigJson(o.model)}, {"train_text", o.train_text}, {"valid_text", o.valid_text},
          {"tokenizer", o.tokenizer_dir},  {"ctx", l.ctx},               {"batch_size", l.batch_size},
          {"steps", l.steps},              {"warmup_steps", l.warmup_steps}, {"learning_rate", l.learning_rate},
          {"min_learning_rate", l.min_learning_rate}, {"weight_decay", l.weight_decay}, {"beta2", l.beta2},
          {"grad_clip", l.grad_clip},      {"eval_interval", l.eval_interval}, {"eval_windows", l.eval_windows},
          {"seed", l.seed},                {"device", o.device}};
}

}  // namespace

torch::Tensor TokenTensor(const Tokenizer& tokenizer, const std::string& path) {
  Require(std::filesystem::exists(path), "{}: missing (build the corpus with `atq corpus`, which scripts/setup.sh runs)",
          path);
  const std::vector<int32_t> ids = EncodeFile(tokenizer, path);
  return torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64);
}

LmTrainResult TrainLanguageModel(const LmTrainOptions& options) {
  const auto tokenizer = LoadGpt2Tokenizer(options.tokenizer_dir + "/encoder.json", options.tokenizer_dir + "/vocab.bpe");
  LmConfig config = options.model;
  config.vocab_size = tokenizer->vocab_size();
  config.bos_id = tokenizer->bos_id();
  config.eos_id = tokenizer->eos_id();
  if (config.arch == LmArch::kGpt2) config.max_positions = std::max(config.max_positions, options.loop.ctx);
  ValidateLmConfig(config, "train-lm model");

  torch::Device device = torch::kCPU;
  if (options.device == "cuda") {
    Require(torch::cuda::is_available(), "train-lm --device cuda: this libtorch sees no CUDA device");
    device = torch::kCUDA;
  }
  const torch::Tensor train_tokens = TokenTensor(*tokenizer, options.train_text);
  const torch::Tensor valid_tokens = TokenTensor(*tokenizer, options.valid_text);

  torch::manual_seed(options.loop.seed);
  auto model = MakeCausalLm(config);
  model->to(device);
  LogInfo("train-lm {}: {:.2f} M parameters, {} train / {} valid tokens, {} steps of {} x {} tokens on {}",
          LmArchName(config.arch), config.ParameterCount() / 1e6, train_tokens.numel(), valid_tokens.numel(),
          options.loop.steps, options.loop.batch_size, options.loop.ctx, options.device);
  LmLoopHooks hooks;
  hooks.save = [&](const std::string& dir) { SaveHuggingFace(*model, dir, options.tokenizer_dir); };
  LmLoopOptions loop = options.loop;
  loop.label = "train-lm";
  return RunLmTraining(*model, train_tokens, valid_tokens, loop, hooks, OptionsJson(options));
}

}  // namespace atq
