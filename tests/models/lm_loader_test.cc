// Loading language models: Hugging Face folders written and read back, config parsing (rope_theta and
// rope_parameters), RoPE row order, and checkpoints that do not match their config.
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/checkpoint.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "models/lm_hf_writer.h"
#include "models/lm_loader.h"
#include "test_util.h"

namespace atq {
namespace {

using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;
using testutil::TempDir;

LmConfig Tiny(LmArch arch) {
  LmConfig c;
  c.arch = arch;
  c.vocab_size = 29;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = arch == LmArch::kGpt2 ? 4 : 2;
  c.head_dim = 4;
  c.intermediate_size = 24;
  c.max_positions = 16;
  c.tied_embeddings = arch == LmArch::kGpt2;
  c.attention_bias = c.mlp_bias = arch == LmArch::kGpt2;
  return c;
}

void WriteJson(const std::string& path, const nlohmann::json& json) { std::ofstream(path) << json.dump(2); }

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(LmLoader, HuggingFaceFolderRoundTripsForBothArchitectures) {
  for (const LmArch arch : {LmArch::kGpt2, LmArch::kLlama}) {
    TempDir dir;
    torch::manual_seed(3);
    auto model = MakeCausalLm(Tiny(arch));
    SaveHuggingFace(*model, dir.path());
    const LanguageModel loaded = LoadLanguageModel(dir.path());
    EXPECT_EQ(loaded.format, "huggingface");
    const torch::Tensor ids = torch::randint(0, 29, {2, 9}, torch::kInt64);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(model->forward(ids), loaded.model->forward(ids))) << LmArchName(arch);
    EXPECT_EQ(ReadJson(dir.File("config.json"))["model_type"], LmArchName(arch));
  }
}

TEST(LmLoader, Gpt2IsSavedInConv1dLayoutWithoutATiedHead) {
  TempDir dir;
  auto model = MakeCausalLm(Tiny(LmArch::kGpt2));
  SaveHuggingFace(*model, dir.path());
  const SafetensorsCheckpoint saved = SafetensorsCheckpoint::Open(dir.path());
  const CheckpointTensor* c_fc = saved.Find("transformer.h.0.mlp.c_fc.weight");
  ASSERT_NE(c_fc, nullptr);
  EXPECT_EQ(c_fc->info->shape, (std::vector<int64_t>{16, 24}));  // [in, out]
  EXPECT_EQ(saved.Find("lm_head.weight"), nullptr);
}

TEST(LmConfig, ReadsRopeThetaFromEitherSpelling) {
  nlohmann::json config = {{"model_type", "llama"}, {"vocab_size", 10},        {"hidden_size", 8},
                           {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"intermediate_size", 12}};
  config["rope_theta"] = 5000.0;
  EXPECT_EQ(ParseHfConfig(config, "a/config.json").rope_theta, 5000.0);
  config.erase("rope_theta");
  config["rope_parameters"] = {{"rope_theta", 250000.0}, {"rope_type", "default"}};
  const LmConfig parsed = ParseHfConfig(config, "a/config.json");
  EXPECT_EQ(parsed.rope_theta, 250000.0);
  EXPECT_EQ(parsed.num_kv_heads, 2);  // absent: multi-head
  EXPECT_FALSE(parsed.tied_embeddings);
  config["rope_parameters"] = {{"rope_theta", 1e4}, {"rope_type", "yarn"}};
  ExpectErrorNaming(ErrorMessageOf([&] { ParseHfConfig(config, "a/config.json"); }), "a/config.json", {"yarn"});
}

TEST(LmLoader, InterleavedRopeRowsBecomeRotateHalf) {
  const torch::Tensor rows = torch::arange(16, torch::kFloat32).reshape({16, 1});  // two heads of 8
  const torch::Tensor half = InterleavedToHalfRotary(rows, 2).flatten();
  const std::vector<float> expected = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};
  EXPECT_TRUE(torch::equal(half, torch::tensor(expected)));
}

class BadCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override { SaveHuggingFace(*MakeCausalLm(Tiny(LmArch::kLlama)), dir_.path()); }
  void EditConfig(const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json config = ReadJson(dir_.File("config.json"));
    edit(config);
    WriteJson(dir_.File("config.json"), config);
  }
  std::string LoadError() { return ErrorMessageOf([&] { LoadLanguageModel(dir_.path()); }); }
  TempDir dir_;
};

TEST_F(BadCheckpoint, MissingTensorIsNamed) {
  EditConfig([](nlohmann::json& c) { c["num_hidden_layers"] = 3; });
  ExpectErrorNaming(LoadError(), dir_.path(), {"model.layers.2.", "missing"});
}

TEST_F(BadCheckpoint, WrongShapeIsNamed) {
  EditConfig([](nlohmann::json& c) { c["intermediate_size"] = 25; });
  ExpectErrorNaming(LoadError(), dir_.path(), {"model.layers.0.mlp.", "[24, 16]", "[25, 16]"});
}

TEST_F(BadCheckpoint, UnknownArchitectureIsNamed) {
  EditConfig([](nlohmann::json& c) {
    c["model_type"] = "bert";
    c["architectures"] = {"BertModel"};
  });
  ExpectErrorNaming(LoadError(), "config.json", {"unknown model_type", "bert"});
}

TEST_F(BadCheckpoint, TensorWithoutAPlaceIsNamed) {
  EditConfig([](nlohmann::json& c) { c["tie_word_embeddings"] = true; });
  // The saved untied head now has no place... except that a tied model may spell out its head; a stray tensor may not.
  std::vector<std::pair<std::string, torch::Tensor>> tensors = HuggingFaceTensors(*MakeCausalLm(Tiny(LmArch::kLlama)));
  const torch::Tensor stray = torch::zeros({3});
  std::vector<TensorToWrite> to_write;
  for (const auto& [name, value] : tensors) {
    to_write.push_back({name, QuantType::kF32, value.sizes().vec(), static_cast<const uint8_t*>(value.data_ptr()),
                        static_cast<uint64_t>(value.numel()) * 4});
  }
  to_write.push_back({"model.layers.0.mystery.weight", QuantType::kF32, {3}, static_cast<const uint8_t*>(stray.data_ptr()), 12});
  WriteSafetensors(dir_.File("model.safetensors"), to_write);
  ExpectErrorNaming(LoadError(), dir_.path(), {"model.layers.0.mystery.weight", "no place"});
}

TEST(Llama2c, TruncatedAndInconsistentFilesAreRejected) {
  TempDir dir;
  const std::vector<int32_t> header = {8, 12, 1, 2, 2, 10, 4};  // weights missing entirely
  std::ofstream(dir.File("short.bin"), std::ios::binary)
      .write(reinterpret_cast<const char*>(header.data()), static_cast<std::streamsize>(header.size() * 4));
  ExpectErrorNaming(ErrorMessageOf([&] { Llama2cCheckpoint::Open(dir.File("short.bin")); }), "short.bin",
                    {"more than the file"});
  const std::vector<int32_t> odd = {8, 12, 1, 3, 3, 10, 4};  // 8 is not divisible by 3 heads
  std::ofstream(dir.File("odd.bin"), std::ios::binary)
      .write(reinterpret_cast<const char*>(odd.data()), static_cast<std::streamsize>(odd.size() * 4));
  ExpectErrorNaming(ErrorMessageOf([&] { Llama2cCheckpoint::Open(dir.File("odd.bin")); }), "odd.bin", {"heads"});
  ExpectErrorNaming(ErrorMessageOf([&] { LoadLanguageModel(dir.File("absent.bin")); }), "absent.bin", {"no such"});
}

TEST(Llama2c, Stories260KHeaderAndTensors) {
  ATQ_FIXTURE_OR_SKIP(bin, "stories260K/stories260K.bin");
  const Llama2cCheckpoint checkpoint = Llama2cCheckpoint::Open(bin);
  const Llama2cHeader& h = checkpoint.header();
  EXPECT_EQ(h.dim, 64);
  EXPECT_EQ(h.n_layers, 5);
  EXPECT_EQ(h.n_heads, 8);
  EXPECT_EQ(h.n_kv_heads, 4);
  EXPECT_EQ(h.hidden_dim, 172);
  EXPECT_EQ(h.vocab_size, 512);
  EXPECT_EQ(h.seq_len, 512);
  EXPECT_TRUE(h.shared_classifier);
  EXPECT_EQ(checkpoint.tensors().size(), 2u + 9u * 5u);
}

}  // namespace
}  // namespace atq
