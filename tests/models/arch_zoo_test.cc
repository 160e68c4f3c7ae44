// Every family of the family table against transformers: the arch-zoo fixtures are tiny random models of each
// family (transformers 4.46.3, float32, eager attention) with the logits transformers computed for a batch of 2x24
// ids. atq's float32 logits must match at every position. Also: the same logits one token at a time through the
// KV cache (sliding windows and soft-capping included), and each config written back and read again.
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/tensor_file.h"
#include "models/lm_config.h"
#include "models/lm_hf_writer.h"
#include "models/lm_loader.h"
#include "test_util.h"
#include "torch/tensor_bridge.h"

namespace atq {
namespace {

// The bound. The fixtures' README measures their float32 logits within 2.4e-5 of a float64 evaluation;
// atq's float32 differs from transformers' only in summation order.
constexpr double kLogitTolerance = 1e-4;

torch::Tensor Reference(const std::string& file, const std::string& name) {
  const TensorFile tensors = TensorFile::Open(file);
  const TensorEntry* entry = tensors.Find(name);
  if (entry == nullptr) throw std::runtime_error(file + " has no tensor " + name);
  return ToTorch(*entry->info, entry->data);
}

class ArchZoo : public ::testing::TestWithParam<std::string> {};

TEST_P(ArchZoo, LogitsMatchTransformers) {
  ATQ_FIXTURE_OR_SKIP(dir, "arch-zoo/" + GetParam());
  SetTorchThreads(0);
  const LanguageModel lm = LoadLanguageModel(dir);
  EXPECT_EQ(lm.model->config().family, GetParam() == "llama_mqa" ? "llama" : GetParam());
  // transformers' count of unique parameters (tied ones once).
  std::ifstream json_file(dir + "/reference.json");
  EXPECT_EQ(lm.model->config().ParameterCount(), nlohmann::json::parse(json_file)["num_parameters"].get<int64_t>());
  const std::string reference = dir + "/reference.safetensors";
  const torch::Tensor ids = Reference(reference, "input_ids").to(torch::kInt64);  // [2, 24]
  const torch::Tensor expected = Reference(reference, "logits");                   // [2, 24, V]
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = lm.model->forward(ids);
  ASSERT_EQ(logits.sizes(), expected.sizes());
  const double error = (logits - expected).abs().max().item<double>();
  EXPECT_LE(error, kLogitTolerance);
  std::cout << GetParam() << ": max |logit - transformers| = " << error << "\n";

  // Token by token through the cache: the same logits (windows and caps apply to cached keys too).
  KvCache cache;
  std::vector<torch::Tensor> steps;
  for (int64_t t = 0; t < ids.size(1); ++t) steps.push_back(lm.model->forward(ids.slice(1, t, t + 1), &cache));
  const double cached_error = (torch::cat(steps, 1) - expected).abs().max().item<double>();
  EXPECT_LE(cached_error, kLogitTolerance) << "through the KV cache";
}

TEST_P(ArchZoo, ConfigWrittenBackReadsTheSame) {
  ATQ_FIXTURE_OR_SKIP(dir, "arch-zoo/" + GetParam());
  const LmConfig config = ReadHfConfig(dir + "/config.json");
  const LmConfig again = ParseHfConfig(HfConfigJson(config), "written config");
  EXPECT_EQ(HfConfigJson(again), HfConfigJson(config));
  EXPECT_EQ(again.family, config.family);
  EXPECT_EQ(again.sliding_window, config.sliding_window);
  EXPECT_EQ(again.window_on_even_layers, config.window_on_even_layers);
  EXPECT_DOUBLE_EQ(again.attention_scale, config.attention_scale);
  EXPECT_EQ(again.rope_scaling, config.rope_scaling);
  EXPECT_EQ(again.tied_embeddings, config.tied_embeddings);
  EXPECT_EQ(again.scale_attn_by_inverse_layer_idx, config.scale_attn_by_inverse_layer_idx);
}

// A Hugging Face folder atq writes (fused tensors fused again, the family's config keys) reads back as the same
// model: identical logits.
TEST_P(ArchZoo, HuggingFaceFolderWrittenBackGivesTheSameLogits) {
  ATQ_FIXTURE_OR_SKIP(dir, "arch-zoo/" + GetParam());
  const LanguageModel lm = LoadLanguageModel(dir);
  testutil::TempDir out;
  SaveHuggingFace(*lm.model, out.path(), "");
  const LanguageModel again = LoadLanguageModel(out.path());
  const torch::Tensor ids = Reference(dir + "/reference.safetensors", "input_ids").to(torch::kInt64);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(again.model->forward(ids), lm.model->forward(ids)));
  if (GetParam() == "phi3") {
    const TensorFile written = TensorFile::Open(out.path());
    EXPECT_NE(written.Find("model.layers.0.self_attn.qkv_proj.weight"), nullptr);
    EXPECT_NE(written.Find("model.layers.0.mlp.gate_up_proj.weight"), nullptr);
    EXPECT_EQ(written.Find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ArchZoo,
                         ::testing::Values("llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt2",
                                           "llama_mqa"),
                         [](const auto& info) { return info.param; });

TEST(ArchZooTest, UnknownModelTypeListsTheFamilies) {
  try {
    ParseHfConfig(nlohmann::json{{"model_type", "falcon"}, {"vocab_size", 10}}, "config.json");
    FAIL() << "falcon accepted";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("falcon"), std::string::npos) << message;
    for (const char* family : {"gpt2", "llama", "mistral", "qwen2", "gemma", "gemma2", "phi3"}) {
      EXPECT_NE(message.find(family), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace atq
