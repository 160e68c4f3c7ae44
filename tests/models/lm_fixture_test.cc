// Language models against other tools' numbers: Hugging Face transformers' logits, log-probabilities and
// greedy ids for gpt2-mini and llama-mini; llama2.c's run.c text for stories260K; the same weights through
// llama.cpp's GGUF.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/tensor_file.h"
#include "formats/quant_type.h"
#include "models/lm_loader.h"
#include "runtime/device_model.h"
#include "runtime/packed_runtime.h"
#include "runtime/generate.h"
#include "test_util.h"
#include "torch/tensor_bridge.h"

namespace atq {
namespace {

// transformers computed the references in float32 from the same float16 weights; a different summation order
// moves logits of magnitude ~10 by a few 1e-5. The bound.
constexpr double kLogitTolerance = 1e-3;

torch::Tensor ReferenceTensor(const std::string& file, const std::string& name) {
  const TensorFile tensors = TensorFile::Open(file);
  const TensorEntry* entry = tensors.Find(name);
  if (entry == nullptr) throw std::runtime_error(file + " has no tensor " + name);
  return ToTorch(*entry->info, entry->data);
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

class HfFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixture, LogitsAndLogProbsMatchTransformers) {
  ATQ_FIXTURE_OR_SKIP(dir, GetParam());
  SetTorchThreads(0);
  const LanguageModel lm = LoadLanguageModel(dir + "/model");
  const std::string outputs = dir + "/reference_outputs.safetensors";
  const torch::Tensor ids = ReferenceTensor(outputs, "input_ids").to(torch::kInt64);                   // [2, 128]
  const torch::Tensor expected_logits = ReferenceTensor(outputs, "logits_every_16th_position");        // [2, 8, V]
  const torch::Tensor expected_logprobs = ReferenceTensor(outputs, "target_logprobs").to(torch::kFloat32);  // [2, 127]
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = lm.model->forward(ids);  // [2, 128, V]
  const torch::Tensor every_16th = logits.index({torch::indexing::Slice(), torch::arange(0, 128, 16)});
  const double logit_error = (every_16th - expected_logits.to(torch::kFloat32)).abs().max().item<double>();
  EXPECT_LE(logit_error, kLogitTolerance);
  const torch::Tensor logprobs =
      torch::log_softmax(logits.slice(1, 0, 127), -1).gather(-1, ids.slice(1, 1).unsqueeze(-1)).squeeze(-1);
  EXPECT_LE((logprobs - expected_logprobs).abs().max().item<double>(), kLogitTolerance);
  std::cout << GetParam() << ": max |logit - transformers| = " << logit_error << "\n";
}

TEST_P(HfFixture, GreedyGenerationMatchesTransformers) {
  ATQ_FIXTURE_OR_SKIP(dir, GetParam());
  SetTorchThreads(0);
  const nlohmann::json reference = ReadJson(dir + "/reference.json");
  const LanguageModel lm = LoadLanguageModel(dir + "/model");
  const auto prompt = reference["greedy_prompt_ids"].get<std::vector<int32_t>>();
  const auto expected = reference["greedy_ids"].get<std::vector<int32_t>>();
  ASSERT_NE(lm.tokenizer, nullptr) << "GPT-2 tokenizer files missing (run scripts/fetch_data.sh)";
  EXPECT_EQ(lm.tokenizer->Encode(reference["greedy_prompt"].get<std::string>()), prompt);
  GenerateOptions options;
  options.max_tokens = static_cast<int64_t>(expected.size() - prompt.size());
  const GenerateResult result = Generate(*lm.model, prompt, options);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), result.tokens.begin(), result.tokens.end());
  EXPECT_EQ(all, expected);
  EXPECT_EQ(lm.tokenizer->Decode(all), reference["greedy_text"].get<std::string>());
}

// Run as stored (keep_packed), a half-precision checkpoint goes whole through atq's decoder: every linear layer a
// float16 matrix in the kernels' [out, in] order, GPT-2's Conv1D weights ([in, out] in the file) transposed once in
// float16. The same float16 values as the float32 load, so the logits agree within the kernels' summation order.
TEST_P(HfFixture, RunsWholeThroughTheKernelsAsStored) {
  ATQ_FIXTURE_OR_SKIP(dir, GetParam());
  SetTorchThreads(0);
  const LanguageModel reference = LoadLanguageModel(dir + "/model");
  LmLoadOptions options;
  options.keep_packed = true;
  LanguageModel lm = LoadLanguageModel(dir + "/model", options);
  const auto parameters = reference.model->named_parameters();
  int64_t matrices = 0;
  for (const auto& [name, weights] : lm.packed) {
    SCOPED_TRACE(name);
    EXPECT_EQ(weights.layout.type, QuantType::kF16);
    const torch::Tensor* expected = parameters.find(name);
    ASSERT_NE(expected, nullptr);
    ASSERT_EQ(std::vector<int64_t>({weights.layout.rows, weights.layout.cols}), expected->sizes().vec());
    const std::vector<float> values =
        Dequantize(weights.layout, weights.data(), static_cast<int64_t>(weights.size()));
    EXPECT_TRUE(torch::equal(torch::tensor(values).view(expected->sizes()), *expected));
    ++matrices;
  }
  const LmConfig& c = lm.model->config();
  EXPECT_GE(matrices, c.num_layers * (c.arch == LmArch::kGpt2 ? 4 : 7));
  AttachPackedWeights(*lm.model, std::move(lm.packed));
  const auto decoder = ForWholePasses(lm.model, Device::kCpu, CpuRuntime::kDecoder);
  const torch::Tensor ids = ReferenceTensor(dir + "/reference_outputs.safetensors", "input_ids").to(torch::kInt64);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = reference.model->forward(ids);
  EXPECT_LE((decoder->forward(ids) - expected).abs().max().item<double>(), kLogitTolerance);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfFixture, ::testing::Values("gpt2-mini", "llama-mini"));

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// run.c prints each piece as it goes and a newline at the end; -n 256 runs 256 forward passes from BOS, so 256 tokens.
TEST(Stories260K, GreedyTextMatchesLlama2cRunC) {
  ATQ_FIXTURE_OR_SKIP(bin, "stories260K/stories260K.bin");
  ATQ_FIXTURE_OR_SKIP(expected_path, "stories260K/greedy_256_runc.txt");
  const LanguageModel lm = LoadLanguageModel(bin);  // finds tok512.bin beside it
  ASSERT_NE(lm.tokenizer, nullptr);
  const int32_t bos = lm.tokenizer->bos_id();
  ASSERT_EQ(bos, 1);
  GenerateOptions options;
  options.max_tokens = 256;
  options.stop_tokens = {bos};  // run.c stops when BOS comes back
  const GenerateResult result = Generate(*lm.model, {bos}, options);
  std::string text;
  int32_t previous = bos;
  for (int32_t token : result.tokens) {
    if (token == bos) break;
    text += lm.tokenizer->DecodeToken(token, previous);
    previous = token;
  }
  EXPECT_EQ(text + "\n", ReadFile(expected_path));
}

// llama.cpp's converter stored the llama2.c weights (interleaved RoPE rows, as ggml wants them) and its
// vocabulary; atq must read both files into the same model.
TEST(Stories260K, GgufF32GivesTheLlama2cLogits) {
  ATQ_FIXTURE_OR_SKIP(bin, "stories260K/stories260K.bin");
  ATQ_FIXTURE_OR_SKIP(gguf, "stories260K/stories260K-f32.gguf");
  const LanguageModel from_bin = LoadLanguageModel(bin);
  const LanguageModel from_gguf = LoadLanguageModel(gguf);
  EXPECT_EQ(from_gguf.model->config().vocab_size, 512);
  EXPECT_EQ(from_gguf.model->config().num_kv_heads, 4);
  const torch::Tensor ids = torch::randint(0, 512, {2, 40}, torch::kInt64);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(from_bin.model->forward(ids), from_gguf.model->forward(ids), 1e-4, 1e-4));
  ASSERT_NE(from_gguf.tokenizer, nullptr);
  EXPECT_EQ(from_gguf.tokenizer->bos_id(), 1);
}

// KL(f32 || quantized) of the next-token distributions on real text. llama.cpp measured 0.00078 (q8_0) and 0.087
// (q4_0) at c=256 while also rounding activations to 8 bits; with float activations atq must not be worse.
TEST(Stories260K, QuantizedGgufFilesStayCloseToF32) {
  ATQ_FIXTURE_OR_SKIP(f32, "stories260K/stories260K-f32.gguf");
  ATQ_FIXTURE_OR_SKIP(text, "stories260K/tinystories_val.txt");
  const LanguageModel reference = LoadLanguageModel(f32);
  std::vector<int32_t> tokens = reference.tokenizer->Encode(ReadFile(text).substr(0, 4000));
  tokens.insert(tokens.begin(), reference.tokenizer->bos_id());
  tokens.resize(256);
  const torch::Tensor ids = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end())).unsqueeze(0);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = torch::log_softmax(reference.model->forward(ids), -1);
  for (const auto& [name, bound] : std::vector<std::pair<std::string, double>>{
           {"stories260K/stories260K-q8_0.gguf", 0.00078}, {"stories260K/stories260K-q4_0.gguf", 0.087}}) {
    const auto path = testutil::FixturePath(name);
    if (!path) GTEST_SKIP() << "fixture missing: " << name;
    const torch::Tensor got = torch::log_softmax(LoadLanguageModel(*path).model->forward(ids), -1);
    const double kl = (expected.exp() * (expected - got)).sum(-1).mean().item<double>();
    EXPECT_LT(kl, bound) << name;
    EXPECT_GT(kl, 0) << name << " should differ from f32 at all";
  }
}

}  // namespace
}  // namespace atq
