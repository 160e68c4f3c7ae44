// Quantization-aware training of language models: what it exports is exactly what it trained (the packed
// checkpoint and, for llama.cpp's ternary blocks, the GGUF score the fake-quantized model's validation loss), and
// the sparsity ramp reaches its target.
#include "train/lm_qat.h"

#include <cmath>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "../models/tiny_tokenizer.h"
#include "models/causal_lm.h"
#include "models/lm_config.h"
#include "models/lm_hf_writer.h"
#include "models/lm_loader.h"
#include "quant/recipe.h"
#include "runtime/packed_runtime.h"
#include "test_util.h"
#include "train/lm_trainer.h"
#include "util/error.h"

namespace atq {
namespace {

namespace fs = std::filesystem;

// A random Llama of width 256 (tq2_0's block) with the tiny vocabulary, and English-like text for it.
struct TinySetup {
  testutil::TempDir dir;
  std::string model, train, valid;
  TinySetup() {
    const nlohmann::json config = {{"model_type", "llama"},       {"vocab_size", testutil::kTinyVocab},
                                   {"hidden_size", 256},          {"intermediate_size", 512},
                                   {"num_hidden_layers", 2},      {"num_attention_heads", 4},
                                   {"num_key_value_heads", 2},    {"max_position_embeddings", 64},
                                   {"tie_word_embeddings", false}};
    torch::manual_seed(5);
    auto lm = MakeCausalLm(ParseHfConfig(config, "test config"));
    const std::string tokenizer = dir.File("tokenizer");
    fs::create_directories(tokenizer);
    testutil::WriteTinyTokenizer(tokenizer);
    model = dir.File("model");
    SaveHuggingFace(*lm, model, tokenizer);
    std::string text;
    for (int line = 0; line < 300; ++line) text += "the theory of the " + std::to_string(line * 7919 % 1000) + " thesis\n";
    train = dir.File("train.txt");
    valid = dir.File("valid.txt");
    testutil::WriteFileText(train, text);
    testutil::WriteFileText(valid, text.substr(0, 2000));
  }
  LmQatOptions Options(const std::string& out, const std::map<std::string, std::string>& settings) const {
    LmQatOptions options;
    options.model = model;
    QuantizeRecipe recipe;
    recipe.settings = settings;
    options.quant = BuildQuantizeOptions(recipe, "test");
    options.train_texts = {train};
    options.valid_text = valid;
    options.loop.ctx = 16;
    options.loop.batch_size = 2;
    options.loop.steps = 3;
    options.loop.warmup_steps = 1;
    options.loop.learning_rate = 1e-3;
    options.loop.eval_interval = 3;
    options.loop.eval_windows = 6;
    options.loop.out_dir = out;
    return options;
  }
};

double ValidLoss(const std::string& path, const std::string& valid) {
  const LanguageModel lm = LoadLanguageModel(path);
  return WindowLoss(*lm.model, TokenTensor(*lm.tokenizer, valid), 16, 6, 2);
}

TEST(LmQat, ExportedFilesAreTheTrainedModel) {
  torch::set_num_threads(1);
  const TinySetup setup;
  for (const char* grid : {"tq2_0", "tq2_0-ratio", "ternary", "bits4"}) {
    SCOPED_TRACE(grid);
    std::map<std::string, std::string> settings;
    if (std::string(grid) == "tq2_0") settings = {{"format", "tq2_0"}};
    if (std::string(grid) == "tq2_0-ratio") settings = {{"format", "tq2_0"}, {"threshold", "ratio"}};
    if (std::string(grid) == "ternary") settings = {{"ternary", "true"}, {"threshold", "sparsity"}, {"threshold_value", "0.4"}};
    if (std::string(grid) == "bits4") settings = {{"bits", "4"}, {"group_size", "64"}};
    LmQatOptions options = setup.Options(setup.dir.File(std::string("out-") + grid), settings);
    if (std::string(grid).rfind("tq2_0", 0) == 0) options.gguf_path = setup.dir.File(std::string(grid) + ".gguf");
    const LmQatResult result = TrainQuantizationAware(options);
    ASSERT_EQ(result.training.evals.size(), 1u);
    const double trained = result.training.best_valid_loss;
    EXPECT_LT(trained, result.start_valid_loss);
    // The packed checkpoint dequantizes to exactly the fake-quantized weights: the same loss.
    EXPECT_NEAR(ValidLoss(options.loop.out_dir + "/best", setup.valid), trained, 1e-6 * trained);
    EXPECT_NEAR(ValidLoss(options.loop.out_dir, setup.valid), trained, 1e-6 * trained);
    if (!options.gguf_path.empty()) {
      // TQ2_0 holds the tq2_0 grid exactly (either fit), and llama.cpp's tensor order (rotary permutation) is only a reorder.
      EXPECT_NEAR(ValidLoss(options.gguf_path, setup.valid), trained, 1e-6 * trained);
      EXPECT_EQ(result.gguf.at("max_requantization_error"), 0.0);
    }
    EXPECT_GT(result.bits_per_weight, 1.5);
    EXPECT_LT(result.bits_per_weight, std::string(grid) == "bits4" ? 4.6 : 2.2);
  }
}

// Residual precision boosting: the boosted weights travel as a sparse residual beside the codes; the checkpoint read
// dequantized scores the trained loss exactly, read packed (kernels with int8 activations) nearly, and without the
// residual it would be worse. A GGUF, which cannot hold the residual, is refused before training.
TEST(LmQat, RpbResidualIsExported) {
  torch::set_num_threads(1);
  const TinySetup setup;
  const std::map<std::string, std::string> ternary = {{"ternary", "true"}};
  LmQatOptions options = setup.Options(setup.dir.File("rpb"), ternary);
  options.rpb_fraction = 0.02;
  const LmQatResult result = TrainQuantizationAware(options);
  const double trained = result.training.best_valid_loss;
  EXPECT_GT(result.boosted_weights, 0);
  // Per channel ternary is about 2.06 bits; 2% of the weights at 48 bits each add about 0.96.
  EXPECT_NEAR(result.bits_per_weight, 2.06 + 0.02 * 48, 0.1);
  const std::string best = options.loop.out_dir + "/best";
  EXPECT_NEAR(ValidLoss(best, setup.valid), trained, 1e-6 * trained);

  LmLoadOptions packed_load;
  packed_load.keep_packed = true;
  LanguageModel packed = LoadLanguageModel(best, packed_load);
  int64_t boosted = 0;
  for (const auto& [name, weights] : packed.packed) boosted += static_cast<int64_t>(weights.boosted_index.size());
  EXPECT_EQ(boosted, result.boosted_weights);
  ASSERT_FALSE(packed.packed.empty());
  // Through the kernels (int8 activations): the same loss within their rounding; without the residual, not.
  AttachPackedWeights(*packed.model, packed.packed);
  const torch::Tensor valid = TokenTensor(*packed.tokenizer, setup.valid);
  const double kernels = WindowLoss(*packed.model, valid, 16, 6, 2);
  EXPECT_NEAR(kernels, trained, 0.01 * trained);
  LanguageModel codes_only = LoadLanguageModel(best, packed_load);
  for (auto& [name, weights] : codes_only.packed) {
    weights.boosted_index.clear();
    weights.boosted_value.clear();
    weights.boosted_delta.clear();
  }
  AttachPackedWeights(*codes_only.model, codes_only.packed);
  const double without = WindowLoss(*codes_only.model, valid, 16, 6, 2);
  EXPECT_GT(std::abs(without - trained), std::abs(kernels - trained));

  LmQatOptions with_gguf = setup.Options(setup.dir.File("rpb-gguf"), ternary);
  with_gguf.rpb_fraction = 0.02;
  with_gguf.gguf_path = setup.dir.File("rpb.gguf");
  EXPECT_THROW(TrainQuantizationAware(with_gguf), Error);
  EXPECT_FALSE(fs::exists(with_gguf.loop.out_dir + "/best"));
}

// Learned scales: trained away from the grid's fit, and the checkpoint (and tq2_0's GGUF, whose float16 block
// scales then are the learned ones) still scores exactly the trained loss. A grid that cannot learn its scales
// (asymmetric: the zero point is fitted with the scale) is refused before training, naming the layer.
TEST(LmQat, LearnedScalesAreTrainedAndExported) {
  torch::set_num_threads(1);
  const TinySetup setup;
  for (const char* grid : {"tq2_0", "bits4"}) {
    SCOPED_TRACE(grid);
    const std::map<std::string, std::string> settings =
        std::string(grid) == "tq2_0" ? std::map<std::string, std::string>{{"format", "tq2_0"}}
                                     : std::map<std::string, std::string>{{"bits", "4"}, {"group_size", "64"}};
    LmQatOptions options = setup.Options(setup.dir.File(std::string("learned-") + grid), settings);
    options.learn_scales = true;
    if (std::string(grid) == "tq2_0") options.gguf_path = setup.dir.File("learned.gguf");
    const LmQatResult result = TrainQuantizationAware(options);
    const double trained = result.training.best_valid_loss;
    EXPECT_LT(trained, result.start_valid_loss);
    for (const nlohmann::json& layer : result.layers) {
      EXPECT_GT(layer.at("learned_scale_change").at("max").get<double>(), 0) << layer.at("name");
    }
    EXPECT_NEAR(ValidLoss(options.loop.out_dir + "/best", setup.valid), trained, 1e-6 * trained);
    if (!options.gguf_path.empty()) {
      EXPECT_NEAR(ValidLoss(options.gguf_path, setup.valid), trained, 1e-6 * trained);
      EXPECT_EQ(result.gguf.at("max_requantization_error"), 0.0);
    }
  }
  LmQatOptions asym = setup.Options(setup.dir.File("learned-asym"), {{"bits", "4"}, {"symmetric", "false"}});
  asym.learn_scales = true;
  try {
    TrainQuantizationAware(asym);
    ADD_FAILURE() << "an asymmetric grid took learned scales";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("learned scales"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("model.layers.0"), std::string::npos) << error.what();
  }
  EXPECT_FALSE(fs::exists(asym.loop.out_dir + "/best"));
}

// The learned scales are part of the resume state: a run stopped between evaluations and resumed is the run that
// never stopped, loss for loss.
TEST(LmQat, LearnedScalesResumeExactly) {
  torch::set_num_threads(1);
  const TinySetup setup;
  LmQatOptions options = setup.Options(setup.dir.File("straight"), {{"ternary", "true"}});
  options.learn_scales = true;
  options.loop.steps = 4;
  options.loop.eval_interval = 2;
  const LmQatResult straight = TrainQuantizationAware(options);
  options.loop.out_dir = setup.dir.File("resumed");
  options.loop.stop_after = 3;
  TrainQuantizationAware(options);
  options.loop.resume = true;
  options.loop.stop_after = 0;
  const LmQatResult resumed = TrainQuantizationAware(options);
  EXPECT_EQ(resumed.training.resumed_from, 3);
  ASSERT_EQ(resumed.training.evals.size(), straight.training.evals.size());
  for (size_t i = 0; i < straight.training.evals.size(); ++i) {
    EXPECT_EQ(resumed.training.evals[i].train_loss, straight.training.evals[i].train_loss) << i;
    EXPECT_EQ(resumed.training.evals[i].valid_loss, straight.training.evals[i].valid_loss) << i;
  }
}

TEST(LmQat, SparsityRampReachesItsTarget) {
  torch::set_num_threads(1);
  const TinySetup setup;
  LmQatOptions options =
      setup.Options(setup.dir.File("ramp"), {{"ternary", "true"}, {"threshold", "sparsity"}, {"threshold_value", "0.6"}});
  options.ramp_steps = 2;
  options.loop.eval_interval = 1;
  const LmQatResult result = TrainQuantizationAware(options);
  ASSERT_EQ(result.training.evals.size(), 3u);
  // The point after step s measures the target set for step s - 1: 0, then 0.3, then the target 0.6.
  EXPECT_NEAR(result.training.evals[0].extra.at("sparsity").get<double>(), 0.0, 0.02);
  EXPECT_NEAR(result.training.evals[1].extra.at("sparsity").get<double>(), 0.3, 0.02);
  EXPECT_NEAR(result.training.evals[2].extra.at("sparsity").get<double>(), 0.6, 0.02);
  EXPECT_NEAR(result.sparsity, 0.6, 0.02);
}

}  // namespace
}  // namespace atq
