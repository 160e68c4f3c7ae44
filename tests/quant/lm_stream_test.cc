// Quantizing a model read a block at a time into outputs written a block at a time: the same bytes as the whole
// model quantized in memory and written at the end (packed checkpoint and GGUF), whatever the sharding; no more
// than one block's weights held at once; outputs interrupted part-way leave no final-named file; missing and
// truncated shards are named; the resident-memory figure leaves a mapped file's pages out.
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/mapped_file.h"
#include "io/tensor_file.h"
#include "models/lm_config.h"
#include "models/lm_gguf_writer.h"
#include "models/lm_hf_writer.h"
#include "models/lm_linear.h"
#include "models/lm_loader.h"
#include "models/tiny_tokenizer.h"
#include "quant/lm_gguf_export.h"
#include "quant/lm_quantizer.h"
#include "quant/packed_lm.h"
#include "quant/recipe.h"
#include "test_util.h"
#include "util/error.h"
#include "util/memory.h"

namespace atq {
namespace {

namespace fs = std::filesystem;
using testutil::TempDir;

std::vector<char> FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A random model of `model_type` saved as a Hugging Face folder with the tiny vocabulary.
std::string SaveRandomModel(const std::string& model_type, const std::string& dir) {
  nlohmann::json config = {{"model_type", model_type},     {"vocab_size", testutil::kTinyVocab},
                           {"num_hidden_layers", 3},       {"num_attention_heads", 4},
                           {"max_position_embeddings", 64}, {"tie_word_embeddings", model_type == "gpt2"}};
  if (model_type == "gpt2") {
    config.update({{"n_embd", 64}, {"n_inner", 128}, {"n_layer", 3}, {"n_head", 4}, {"n_positions", 64}});
  } else {
    config.update({{"hidden_size", 64}, {"intermediate_size", 128}, {"num_key_value_heads", 2}});
  }
  torch::manual_seed(31);
  auto model = MakeCausalLm(ParseHfConfig(config, model_type + " config"));
  const std::string tokenizer = (fs::path(dir) / "tokenizer").string();
  fs::create_directories(tokenizer);
  testutil::WriteTinyTokenizer(tokenizer);
  const std::string out = (fs::path(dir) / model_type).string();
  SaveHuggingFace(*model, out, tokenizer);
  return out;
}

std::string CalibrationText(const std::string& dir) {
  std::string text;
  for (int line = 0; line < 2000; ++line) text += "the theory of the " + std::to_string(line * 7919 % 1000) + " thesis\n";
  const std::string path = (fs::path(dir) / "calib.txt").string();
  testutil::WriteFileText(path, text);
  return path;
}

LmQuantizeOptions Options(const std::string& text, const std::string& grid) {
  QuantizeRecipe recipe;
  recipe.settings = {{"calib", text}, {"nsamples", "4"}, {"seqlen", "32"}, {"batch_size", "2"}, {"embeddings", "q8_0"}};
  if (grid == "gptq-q4_0") recipe.settings.merge(std::map<std::string, std::string>{{"method", "gptq"}, {"format", "q4_0"}});
  if (grid == "gptq-ternary") recipe.settings.merge(std::map<std::string, std::string>{{"method", "gptq"}, {"ternary", "true"}});
  if (grid == "rtn-4") {
    recipe.settings["nsamples"] = "0";
    recipe.settings.merge(std::map<std::string, std::string>{{"method", "rtn"}, {"bits", "4"}, {"group_size", "32"}});
  }
  return BuildQuantizeOptions(recipe, "test");
}

struct Outputs {
  std::string packed_dir, gguf;
};

// The whole model in memory, quantized, then written.
Outputs QuantizeWhole(const std::string& model_dir, const LmQuantizeOptions& options, const std::string& out) {
  LmLoadOptions load;
  LanguageModel lm = LoadLanguageModel(model_dir, load);
  const LmQuantizeResult result = QuantizeLanguageModel(*lm.model, *lm.tokenizer, options);
  Outputs outputs{(fs::path(out) / "packed").string(), (fs::path(out) / "model.gguf").string()};
  PackedLmOptions pack;
  pack.tokenizer_dir = model_dir;
  SavePackedLm(*lm.model, result.packed, outputs.packed_dir, pack);
  ExportQuantizedGguf(*lm.model, options, result, model_dir, std::nullopt, QuantType::kQ8_0, outputs.gguf);
  return outputs;
}

// Read a block at a time and written as each block is done. `most_blocks_held` gets the largest number of blocks
// whose weights were in memory at once.
Outputs QuantizeStreamed(const std::string& model_dir, const LmQuantizeOptions& options, const std::string& out,
                         uint64_t shard_bytes, int* most_blocks_held = nullptr) {
  LmLoadOptions load;
  load.deferred = true;
  LanguageModel lm = LoadLanguageModel(model_dir, load);
  CausalLmImpl& model = *lm.model;
  Outputs outputs{(fs::path(out) / "packed").string(), (fs::path(out) / "model.gguf").string()};
  PackedLmOptions pack;
  pack.tokenizer_dir = model_dir;
  pack.max_shard_bytes = shard_bytes;
  PackedLmWriter packed(model.config(), PackedLmPlan(model, PlannedLayouts(model, options)), outputs.packed_dir, pack);
  LmGgufStream gguf(model.config(), ParameterShapeGroups(model), model_dir,
                    QuantizedGgufOptions(model, options, std::nullopt, QuantType::kQ8_0), outputs.gguf);
  LmQuantizeStream stream;
  stream.weights = lm.weights.get();
  stream.write = [&](const std::vector<LmTensorData>& group) {
    if (most_blocks_held != nullptr) {
      int held = 0;
      for (int64_t b = 0; b < model.config().num_layers; ++b) {
        for (const torch::Tensor& parameter : model.Block(static_cast<size_t>(b))->parameters()) {
          if (parameter.dim() == 2 && !IsPlaceholderWeight(parameter)) {
            ++held;
            break;
          }
        }
      }
      *most_blocks_held = std::max(*most_blocks_held, held);
    }
    packed.Write(group);
    gguf.Write(group);
  };
  QuantizeLanguageModel(model, *lm.tokenizer, options, &stream);
  packed.Commit();
  gguf.Commit();
  // Everything was released as it was written.
  for (const auto& parameter : model.named_parameters()) {
    if (parameter.value().dim() == 2) {
      EXPECT_TRUE(IsPlaceholderWeight(parameter.value())) << parameter.key();
    }
  }
  return outputs;
}

class LmStreamTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(LmStreamTest, StreamedOutputsAreTheWholeModelsBytes) {
  const auto& [family, grid] = GetParam();
  TempDir dir;
  const std::string model_dir = SaveRandomModel(family, dir.path());
  const LmQuantizeOptions options = Options(CalibrationText(dir.path()), grid);
  const Outputs whole = QuantizeWhole(model_dir, options, (fs::path(dir.path()) / "whole").string());
  int most_blocks_held = 0;
  const Outputs streamed = QuantizeStreamed(model_dir, options, (fs::path(dir.path()) / "streamed").string(),
                                            5'000'000'000, &most_blocks_held);
  EXPECT_EQ(most_blocks_held, 1);
  EXPECT_EQ(FileBytes(whole.gguf), FileBytes(streamed.gguf));
  EXPECT_EQ(FileBytes(whole.packed_dir + "/model.safetensors"), FileBytes(streamed.packed_dir + "/model.safetensors"));

  // Cut into shards of 40 kB: the same tensors, byte for byte, behind an index; and the model reads back.
  const Outputs sharded = QuantizeStreamed(model_dir, options, (fs::path(dir.path()) / "sharded").string(), 40'000);
  ASSERT_TRUE(fs::exists(sharded.packed_dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(sharded.packed_dir + "/model.safetensors"));
  const TensorFile one = TensorFile::Open(whole.packed_dir);
  const TensorFile shards = TensorFile::Open(sharded.packed_dir);
  ASSERT_GT(shards.safetensors()->files().size(), 2u);
  ASSERT_EQ(one.tensors().size(), shards.tensors().size());
  for (const TensorEntry& entry : one.tensors()) {
    const TensorEntry* other = shards.Find(entry.info->name);
    ASSERT_NE(other, nullptr) << entry.info->name;
    ASSERT_EQ(other->info->nbytes, entry.info->nbytes) << entry.info->name;
    EXPECT_EQ(std::memcmp(other->data, entry.data, entry.info->nbytes), 0) << entry.info->name;
    EXPECT_EQ(other->info->type, entry.info->type) << entry.info->name;
  }
  const LanguageModel a = LoadLanguageModel(whole.packed_dir);
  const LanguageModel b = LoadLanguageModel(sharded.packed_dir);
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::randint(0, 256, {1, 24}, torch::kInt64);
  EXPECT_TRUE(torch::equal(a.model->forward(ids), b.model->forward(ids)));
}

INSTANTIATE_TEST_SUITE_P(Families, LmStreamTest,
                         ::testing::Values(std::make_tuple("llama", "gptq-q4_0"), std::make_tuple("gpt2", "rtn-4"),
                                           std::make_tuple("phi3", "gptq-q4_0"), std::make_tuple("gemma", "gptq-ternary")),
                         [](const auto& info) {
                           std::string name = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// An output that fails part-way (here: the writer's callback throws after the second block, as a full disk
// would) leaves no final-named file, and the input is untouched.
TEST(LmStream, InterruptedOutputsLeaveNoFile) {
  TempDir dir;
  const std::string model_dir = SaveRandomModel("llama", dir.path());
  const std::vector<char> input = FileBytes(model_dir + "/model.safetensors");
  const LmQuantizeOptions options = Options(CalibrationText(dir.path()), "rtn-4");
  LmLoadOptions load;
  load.deferred = true;
  LanguageModel lm = LoadLanguageModel(model_dir, load);
  CausalLmImpl& model = *lm.model;
  const std::string packed_dir = (fs::path(dir.path()) / "packed").string();
  const std::string gguf_path = (fs::path(dir.path()) / "model.gguf").string();
  {
    PackedLmOptions pack;
    pack.max_shard_bytes = 40'000;
    PackedLmWriter packed(model.config(), PackedLmPlan(model, PlannedLayouts(model, options)), packed_dir, pack);
    LmGgufStream gguf(model.config(), ParameterShapeGroups(model), model_dir,
                      QuantizedGgufOptions(model, options, std::nullopt, QuantType::kQ8_0), gguf_path);
    LmQuantizeStream stream;
    stream.weights = lm.weights.get();
    int groups = 0;
    stream.write = [&](const std::vector<LmTensorData>& group) {
      packed.Write(group);
      gguf.Write(group);
      if (++groups == 2) Fail("disk full (simulated)");
    };
    const std::string message = testutil::ErrorMessageOf([&] { QuantizeLanguageModel(model, *lm.tokenizer, options, &stream); });
    EXPECT_NE(message.find("disk full (simulated)"), std::string::npos) << message;
    EXPECT_EQ(groups, 2);
  }
  EXPECT_FALSE(fs::exists(gguf_path));
  for (const auto& entry : fs::directory_iterator(packed_dir)) {
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(name.find(".tmp") != std::string::npos) << "left behind: " << name;
  }
  EXPECT_EQ(FileBytes(model_dir + "/model.safetensors"), input);
}

TEST(LmStream, MissingOrTruncatedShardIsNamed) {
  TempDir dir;
  const std::string model_dir = SaveRandomModel("llama", dir.path());
  const LmQuantizeOptions options = Options(CalibrationText(dir.path()), "rtn-4");
  const Outputs out = QuantizeStreamed(model_dir, options, (fs::path(dir.path()) / "out").string(), 40'000);
  const std::string shard = TensorFile::Open(out.packed_dir).safetensors()->files()[1]->path();
  ASSERT_TRUE(fs::exists(shard)) << shard;
  const std::vector<char> bytes = FileBytes(shard);
  fs::resize_file(shard, bytes.size() - 100);
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { LoadLanguageModel(out.packed_dir); }), shard, {});
  fs::remove(shard);
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { LoadLanguageModel(out.packed_dir); }), shard, {});
}

// A GGUF run from its file: the weights the kernels run stay in the mapping (no copy but the q/k rows ggml
// stores in its rotary order), so loading it grows anonymous memory by a small part of what a float load does.
TEST(LmStream, PackedModelRunsFromTheMapping) {
  if (AnonymousResidentBytes() == 0) GTEST_SKIP() << "no /proc/self/status RssAnon here";
  TempDir dir;
  const std::string tokenizer = (fs::path(dir.path()) / "tokenizer").string();
  fs::create_directories(tokenizer);
  testutil::WriteTinyTokenizer(tokenizer);
  LmConfig config = ParseHfConfig({{"model_type", "llama"}, {"vocab_size", 4096}, {"hidden_size", 512},
                                   {"num_hidden_layers", 4}, {"num_attention_heads", 8}, {"num_key_value_heads", 2},
                                   {"intermediate_size", 1536}, {"max_position_embeddings", 64},
                                   {"tie_word_embeddings", false}},
                                  "config");
  const std::string path = (fs::path(dir.path()) / "model.gguf").string();
  {
    auto model = MakeCausalLm(config);
    LmGgufOptions options;
    options.linear_type = options.embedding_type = QuantType::kQ8_0;
    WriteLmGguf(*model, tokenizer, options, path);
  }
  const auto anonymous_growth = [&](bool keep_packed) {
    const int64_t before = AnonymousResidentBytes();
    LmLoadOptions load;
    load.keep_packed = keep_packed;
    LanguageModel lm = LoadLanguageModel(path, load);
    const int64_t growth = AnonymousResidentBytes() - before;
    if (keep_packed) {
      for (const auto& [name, packed] : lm.packed) {
        const bool rotary = name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos;
        EXPECT_EQ(packed.mapped != nullptr, !rotary) << name;
      }
      EXPECT_EQ(lm.packed.size(), 4u * 7u + 2u);  // every linear layer, the embedding and the head
    }
    return growth;
  };
  const int64_t packed = anonymous_growth(true);
  const int64_t dequantized = anonymous_growth(false);
  EXPECT_GT(dequantized, 40 << 20);  // ~18 M weights in float32
  EXPECT_LT(packed, dequantized / 8) << "packed load grew " << packed << " bytes, the float load " << dequantized;
}

// The memory figure of large-model runs is RssAnon: memory a process allocated counts, pages of a file it maps and
// reads do not.
TEST(LmStream, AnonymousResidentMemoryLeavesMappedFilesOut) {
  if (AnonymousResidentBytes() == 0) GTEST_SKIP() << "no /proc/self/status RssAnon here";
  constexpr size_t kBytes = 64 << 20;
  TempDir dir;
  const std::string path = (fs::path(dir.path()) / "big.bin").string();
  {
    std::ofstream out(path, std::ios::binary);
    const std::vector<char> chunk(1 << 20, 1);
    for (size_t i = 0; i < kBytes / chunk.size(); ++i) out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
  }
  const int64_t before_map = AnonymousResidentBytes();
  {
    const MappedFile mapped = MappedFile::Open(path);
    uint64_t sum = 0;
    for (size_t i = 0; i < mapped.size(); i += 4096) sum += mapped.data()[i];
    EXPECT_EQ(sum, kBytes / 4096);
    EXPECT_LT(AnonymousResidentBytes() - before_map, 8 << 20);
  }
  const int64_t before_alloc = AnonymousResidentBytes();
  std::vector<uint8_t> allocated(kBytes);
  for (size_t i = 0; i < allocated.size(); i += 4096) allocated[i] = 1;
  EXPECT_GT(AnonymousResidentBytes() - before_alloc, static_cast<int64_t>(kBytes * 9 / 10));
}

}  // namespace
}  // namespace atq
