// Synthetic checkpoints: the presets against the published models' parameter counts, the checkpoint tensor list
// against the model builder for every family, and a tiny synthetic model written in shards, read back, the same
// bytes from the same seed.
#include "models/lm_synth.h"

#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/tensor_file.h"
#include "models/lm_config.h"
#include "models/lm_family.h"
#include "models/lm_loader.h"
#include "test_util.h"

namespace atq {
namespace {

namespace fs = std::filesystem;

// The parameter counts the models' pages and papers give (transformers' num_parameters()).
TEST(LmSynth, PresetsHaveThePublishedParameterCounts) {
  const std::pair<const char*, int64_t> published[] = {{"tinyllama-1.1b", 1'100'048'384},
                                                       {"mistral-7b", 7'241'732'096},
                                                       {"llama-3-8b", 8'030'261'248},
                                                       {"gemma-7b", 8'537'680'896},
                                                       {"qwen2-7b", 7'615'616'512}};
  ASSERT_EQ(LmSynthPresets().size(), std::size(published));
  for (const auto& [name, count] : published) {
    const SynthPreset* preset = nullptr;
    for (const SynthPreset& row : LmSynthPresets()) {
      if (row.name == name) preset = &row;
    }
    ASSERT_NE(preset, nullptr) << name;
    const LmConfig config = ParseHfConfig(nlohmann::json::parse(preset->config_json), name);
    EXPECT_EQ(config.ParameterCount(), count) << name;
    int64_t listed = 0;
    for (const LmCheckpointTensor& tensor : LmCheckpointTensors(config)) {
      int64_t size = 1;
      for (const int64_t dim : tensor.shape) size *= dim;
      listed += size;
    }
    EXPECT_EQ(listed, count) << name;
  }
}

LmConfig TinyOf(const LmFamily& family) {
  LmConfig config;
  config.family = std::string(family.model_type);
  config.arch = family.builder;
  config.vocab_size = 50;
  config.hidden_size = 16;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = 4;
  config.intermediate_size = 24;
  config.max_positions = 16;
  family.read_config(nlohmann::json::object(), "test", config);
  config.tied_embeddings = family.tied_by_default;
  return config;
}

TEST(LmSynth, CheckpointTensorsAreTheModelsParameters) {
  for (const LmFamily& family : LmFamilies()) {
    if (family.builder != LmArch::kLlama) continue;
    for (const bool biases : {false, true}) {
      LmConfig config = TinyOf(family);
      if (biases && !config.fused_projections) config.attention_bias = config.mlp_bias = true;
      std::vector<std::pair<std::string, torch::Tensor>> parameters;
      for (const auto& parameter : MakeCausalLm(config)->named_parameters()) {
        parameters.emplace_back(parameter.key(), parameter.value());
      }
      if (family.fuse_for_checkpoint != nullptr) family.fuse_for_checkpoint(parameters);
      std::set<std::pair<std::string, std::vector<int64_t>>> expected, listed;
      for (const auto& [name, value] : parameters) expected.emplace(name, value.sizes().vec());
      for (const LmCheckpointTensor& tensor : LmCheckpointTensors(config)) listed.emplace(tensor.name, tensor.shape);
      EXPECT_EQ(listed, expected) << family.model_type << (biases ? " with biases" : "");
    }
  }
}

TEST(LmSynth, ShardedTinyModelReadsBackAndIsReproducible) {
  testutil::TempDir dir;
  const nlohmann::json config = {{"model_type", "qwen2"},        {"vocab_size", 300},
                                 {"hidden_size", 64},            {"intermediate_size", 128},
                                 {"num_hidden_layers", 3},       {"num_attention_heads", 4},
                                 {"num_key_value_heads", 2},     {"max_position_embeddings", 64},
                                 {"rms_norm_eps", 1e-6},         {"tie_word_embeddings", false}};
  testutil::WriteFileText(dir.File("config.json"), config.dump());
  SynthOptions options;
  options.config = dir.File("config.json");
  options.shard_bytes = 40'000;  // several shards of a ~200 kB model
  options.seed = 7;
  const auto write = [&](const std::string& out) {
    options.out = dir.File(out);
    return SynthesizeCheckpoint(options);
  };
  const SynthReport first = write("a");
  EXPECT_GT(first.files.size(), 2u);
  EXPECT_TRUE(fs::exists(dir.File("a/model.safetensors.index.json")));
  const LanguageModel lm = LoadLanguageModel(dir.File("a"));
  EXPECT_EQ(lm.model->config().family, "qwen2");
  EXPECT_EQ(lm.model->config().ParameterCount(), first.parameters);
  // bf16 on disk, read as float32: the weights have the scale the recipe draws (0.02-ish), not garbage.
  const torch::Tensor q = lm.model->named_parameters()["model.layers.1.self_attn.q_proj.weight"];
  const double std = q.std().item<double>();
  EXPECT_GT(std, 0.01);
  EXPECT_LT(std, 0.1);

  write("b");
  for (const std::string& file : first.files) {
    EXPECT_EQ(testutil::ReadFileBytes(dir.File("a/" + file)), testutil::ReadFileBytes(dir.File("b/" + file))) << file;
  }
  options.seed = 8;
  write("c");
  EXPECT_NE(testutil::ReadFileBytes(dir.File("a/" + first.files[0])),
            testutil::ReadFileBytes(dir.File("c/" + first.files[0])));
}

TEST(LmSynth, UnknownPresetListsTheKnownOnes) {
  SynthOptions options;
  options.like = "llama-9000";
  options.out = "unused";
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { SynthesizeCheckpoint(options); }), "llama-9000",
                              {"tinyllama-1.1b", "mistral-7b"});
}

}  // namespace
}  // namespace atq
