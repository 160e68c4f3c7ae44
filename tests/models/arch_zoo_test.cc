// Every family of the family table against transformers: the arch-zoo fixtures are tiny random models of each
// family (transformers 4.46.3, float32, eager attention) with the logits transformers computed for a batch of 2x24
// ids. atq's float32 logits must match at every position. Also: the same logits one token at a time through the
// KV cache (sliding windows and soft-capping included), and each config written back and read again.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/tensor_file.h"
#include "models/lm_config.h"
#include "io/gpt2_tokenizer.h"
#include "models/lm_gguf_writer.h"
#include "models/lm_hf_writer.h"
#include "runtime/packed_runtime.h"
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

// A byte-level BPE tokenizer.json of exactly the fixtures' 256 ids (GPT-2's byte alphabet, no merges), so a GGUF
// of any family carries a vocabulary llama.cpp reads.
void WriteByteTokenizer(const std::string& dir) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int byte = 0; byte < 256; ++byte) vocab[Gpt2ByteCharacter(static_cast<uint8_t>(byte))] = byte;
  const nlohmann::json tokenizer = {
      {"version", "1.0"},
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  testutil::WriteFileText(dir + "/tokenizer.json", tokenizer.dump());
}

// The file llama.cpp's converter would write, read back: f32 gives transformers' logits (the same weights, the
// norms stored as 1 + w for Gemma, Phi-3's projections fused, Llama 3's RoPE scaling as rope_freqs, Gemma 2's caps
// and windows as keys), f16 within its rounding.
TEST_P(ArchZoo, GgufWrittenBackGivesTheSameLogits) {
  ATQ_FIXTURE_OR_SKIP(dir, "arch-zoo/" + GetParam());
  SetTorchThreads(0);
  const LanguageModel lm = LoadLanguageModel(dir);
  testutil::TempDir out;
  WriteByteTokenizer(out.path());
  if (lm.model->config().scale_attn_by_inverse_layer_idx) {
    // llama.cpp's gpt2 graph cannot run it, so no file that claims to be this model is written.
    const std::string path = out.File("refused.gguf");
    testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { WriteLmGguf(*lm.model, out.path(), {}, path); }), path,
                                {"scale_attn_by_inverse_layer_idx"});
    EXPECT_FALSE(std::filesystem::exists(path));
    return;
  }
  const std::string reference = dir + "/reference.safetensors";
  const torch::Tensor ids = Reference(reference, "input_ids").to(torch::kInt64);
  const torch::Tensor expected = Reference(reference, "logits");
  torch::NoGradGuard no_grad;
  for (const QuantType type : {QuantType::kF32, QuantType::kF16}) {
    LmGgufOptions options;
    options.linear_type = options.embedding_type = type;
    const std::string path = out.File(std::string(TypeName(type)) + ".gguf");
    WriteLmGguf(*lm.model, out.path(), options, path);
    const LanguageModel read = LoadLanguageModel(path);
    EXPECT_EQ(read.model->config().ParameterCount(), lm.model->config().ParameterCount());
    const torch::Tensor logits = read.model->forward(ids);
    ASSERT_EQ(logits.sizes(), expected.sizes());
    const double error = (logits - expected).abs().max().item<double>();
    const double relative = ((logits - expected).norm() / expected.norm()).item<double>();
    if (type == QuantType::kF32) {
      EXPECT_LE(error, kLogitTolerance);
    } else {
      // f16 rounds each weight by up to 2^-11 of itself; through a few layers the logits move by ~1e-3 of theirs.
      EXPECT_LE(relative, 5e-3) << TypeName(type);
    }
    std::cout << GetParam() << " " << TypeName(type) << " GGUF: max |logit - transformers| = " << error
              << ", relative " << relative << "\n";
  }
}

// Quantized GGUFs need rows of 256 for the ternary blocks, which the fixtures' 64-wide rows are not: the same
// family, four times wider, seeded random weights. Each type's read-back against the float model it was written
// from, through the dequantized model and through the packed kernels (which must agree within their int8
// activations); the relative errors are printed for the README's table.
TEST_P(ArchZoo, QuantizedGgufOfAWiderModelStaysClose) {
  ATQ_FIXTURE_OR_SKIP(dir, "arch-zoo/" + GetParam());
  SetTorchThreads(0);
  LmConfig config = ReadHfConfig(dir + "/config.json");
  config.scale_attn_by_inverse_layer_idx = false;  // llama.cpp's gpt2 has none
  config.hidden_size = 256;
  config.head_dim = 256 / config.num_heads;
  config.intermediate_size = 512;
  if (config.attention_scale > 0) config.attention_scale = 1.0 / std::sqrt(static_cast<double>(config.head_dim));
  torch::manual_seed(18);
  const auto model = MakeCausalLm(config);
  {
    torch::NoGradGuard no_grad;
    // Trained models' scale: weights ~N(0, 0.02), norms near their identity.
    for (auto& parameter : model->named_parameters()) {
      if (parameter.value().dim() == 2) parameter.value().normal_(0, 0.02);
    }
  }
  model->eval();
  testutil::TempDir out;
  WriteByteTokenizer(out.path());
  const torch::Tensor ids = torch::randint(0, config.vocab_size, {2, 24}, torch::kInt64);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = model->forward(ids);
  // Loose bounds on ||logits - float|| / ||float||: 8-bit, 4-bit and ternary weights of random matrices.
  const std::pair<QuantType, double> types[] = {
      {QuantType::kQ8_0, 0.05}, {QuantType::kQ4_0, 0.5}, {QuantType::kTQ2_0, 1.5}};
  for (const auto& [type, bound] : types) {
    LmGgufOptions options;
    options.linear_type = options.embedding_type = options.fallback_type = type;
    const std::string path = out.File(std::string(TypeName(type)) + ".gguf");
    const LmGgufReport report = WriteLmGguf(*model, out.path(), options, path);
    for (const auto& tensor : report.tensors) EXPECT_EQ(tensor.written, tensor.requested) << tensor.hf_name;
    const LanguageModel read = LoadLanguageModel(path);
    const torch::Tensor logits = read.model->forward(ids);
    const double relative = ((logits - expected).norm() / expected.norm()).item<double>();
    EXPECT_LE(relative, bound) << TypeName(type);
    LmLoadOptions packed_options;
    packed_options.keep_packed = true;
    LanguageModel packed = LoadLanguageModel(path, packed_options);
    EXPECT_FALSE(packed.packed.empty());
    AttachPackedWeights(*packed.model, std::move(packed.packed));
    const torch::Tensor packed_logits = packed.model->forward(ids);
    const double kernels = ((packed_logits - logits).norm() / logits.norm()).item<double>();
    EXPECT_LE(kernels, 0.05) << TypeName(type) << ": packed kernels against the dequantized model";
    std::cout << GetParam() << " " << TypeName(type) << " GGUF: relative logit error " << relative
              << " (packed kernels: " << ((packed_logits - expected).norm() / expected.norm()).item<double>()
              << ")\n";
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
