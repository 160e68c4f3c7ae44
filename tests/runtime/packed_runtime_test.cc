// The packed runtime against the dequantize-then-float path: a model whose layers run packed through the kernels
// gives the logits of the same model with each weight replaced by its dequantized values, within the error of
// quantizing activations to int8; float32 "packing" agrees to float rounding. Also a llama.cpp GGUF run packed.
#include "runtime/packed_runtime.h"

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "formats/quant_type.h"
#include "models/causal_lm.h"
#include "models/lm_linear.h"
#include "models/lm_loader.h"
#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

LmConfig Config(LmArch arch, bool tied) {
  LmConfig c;
  c.arch = arch;
  c.vocab_size = 37;
  c.hidden_size = 256;  // a whole TQ2_0 block per row
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = arch == LmArch::kGpt2 ? 4 : 2;
  c.head_dim = 64;
  c.intermediate_size = 512;
  c.max_positions = 32;
  c.tied_embeddings = tied;
  c.attention_bias = c.mlp_bias = arch == LmArch::kGpt2;
  return c;
}

// Every LmLinear weight and the token embedding replaced by Dequantize(Quantize(w)) of the runtime's formats.
void DequantizeInPlace(CausalLmImpl& model, const PackedRuntimeOptions& options) {
  torch::NoGradGuard no_grad;
  auto round_trip = [](torch::Tensor& weight, QuantType type, Granularity granularity) {
    const torch::Tensor w = weight.contiguous();
    const Layout layout{type, w.size(0), w.size(1), granularity, 0};
    const std::vector<uint8_t> bytes = Quantize(layout, w.data_ptr<float>());
    const std::vector<float> back = Dequantize(layout, bytes.data(), static_cast<int64_t>(bytes.size()));
    weight.copy_(torch::from_blob(const_cast<float*>(back.data()), w.sizes(), torch::kFloat32));
  };
  for (const auto& item : model.named_modules()) {
    if (auto* linear = item.value()->as<LmLinearImpl>()) round_trip(linear->weight, options.linear_type, options.granularity);
    if (auto* embedding = item.value()->as<torch::nn::EmbeddingImpl>();
        embedding && (item.key() == "model.embed_tokens" || item.key() == "transformer.wte")) {
      round_trip(embedding->weight, options.embedding_type, options.granularity);
    }
  }
}

struct RuntimeCase {
  LmArch arch;
  bool tied;
  QuantType linear, embedding;
  double relative_bound;  // max |logit difference| / max |logit|
};

class PackedRuntimeTest : public ::testing::TestWithParam<RuntimeCase> {};

// Bounds: f32 packing only reorders float sums (1e-5); the quantized formats add int8 activation rounding,
// half a step of max|x|/127 per element: measured 0.7% to 1.6% of the largest logit here, bound 2.5%.
TEST_P(PackedRuntimeTest, LogitsMatchTheDequantizedFloatModel) {
  const RuntimeCase& c = GetParam();
  torch::manual_seed(3);
  const LmConfig config = Config(c.arch, c.tied);
  std::shared_ptr<CausalLmImpl> packed = MakeCausalLm(config);
  std::shared_ptr<CausalLmImpl> reference = MakeCausalLm(config);
  {
    torch::NoGradGuard no_grad;
    auto source = packed->named_parameters();
    for (auto& p : reference->named_parameters()) p.value().copy_(source[p.key()] + 0.0);
  }
  packed->eval();
  reference->eval();
  const PackedRuntimeOptions options{c.linear, c.embedding, Granularity::kChannel};
  DequantizeInPlace(*reference, options);
  const PackedRuntimeSizes sizes = PackForRuntime(*packed, options);
  EXPECT_GT(sizes.packed_bytes, 0);

  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::tensor({{1, 5, 9, 2, 30, 7, 7, 3}}, torch::kInt64);
  const torch::Tensor expected = reference->forward(ids);
  const torch::Tensor got = packed->forward(ids);
  const double scale = expected.abs().max().item<double>();
  const double difference = (got - expected).abs().max().item<double>();
  EXPECT_LE(difference, c.relative_bound * scale) << TypeName(c.linear) << ": max |logit| " << scale;

  // A cached decode step gives the same logits as the full pass.
  KvCache cache;
  packed->forward(ids.slice(1, 0, 7), &cache);
  const torch::Tensor step = packed->forward(ids.slice(1, 7, 8), &cache);
  EXPECT_LE((step[0][0] - got[0][7]).abs().max().item<double>(), 1e-4 * scale);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, PackedRuntimeTest,
    ::testing::Values(RuntimeCase{LmArch::kLlama, true, QuantType::kF32, QuantType::kF32, 1e-5},
                      RuntimeCase{LmArch::kGpt2, true, QuantType::kF32, QuantType::kF32, 1e-5},
                      RuntimeCase{LmArch::kLlama, true, QuantType::kTernary2, QuantType::kQ8_0, 0.025},
                      RuntimeCase{LmArch::kLlama, false, QuantType::kTQ2_0, QuantType::kQ8_0, 0.025},
                      RuntimeCase{LmArch::kGpt2, true, QuantType::kQ4_0, QuantType::kQ4_0, 0.025},
                      RuntimeCase{LmArch::kGpt2, false, QuantType::kQ8_0, QuantType::kF16, 0.025},
                      RuntimeCase{LmArch::kLlama, true, QuantType::kTQ1_0, QuantType::kQ8_0, 0.025},
                      RuntimeCase{LmArch::kLlama, true, QuantType::kUniform4Sym, QuantType::kQ8_0, 0.025}));

TEST(PackedRuntime, AttachRefusesUnknownNamesAndWrongShapes) {
  std::shared_ptr<CausalLmImpl> model = MakeCausalLm(Config(LmArch::kLlama, true));
  PackedWeights weights{{QuantType::kQ8_0, 8, 32, Granularity::kTensor, 0}, {}, nullptr, 0};
  weights.bytes.resize(static_cast<size_t>(PackedBytes(weights.layout)));
  EXPECT_THROW(AttachPackedWeights(*model, {{"model.no_such.weight", weights}}), Error);
  EXPECT_THROW(AttachPackedWeights(*model, {{"model.layers.0.mlp.up_proj.weight", weights}}), Error);
}

// llama.cpp's Q8_0 file of stories260K run packed (its rotary rows reordered in place): close to the f32 model,
// as close as llama.cpp's own Q8_0 run is (KL 0.000776 in the fixture's README), with the linear layers released.
TEST(PackedRuntime, LlamaCppQ8_0RunsPacked) {
  const auto f32 = testutil::FixturePath("stories260K/stories260K-f32.gguf");
  const auto q8 = testutil::FixturePath("stories260K/stories260K-q8_0.gguf");
  if (!f32 || !q8) GTEST_SKIP() << "fixture missing: stories260K GGUF files";
  LanguageModel reference = LoadLanguageModel(*f32);
  LmLoadOptions load;
  load.keep_packed = true;
  LanguageModel lm = LoadLanguageModel(*q8, load);
  ASSERT_FALSE(lm.packed.empty());
  const PackedRuntimeSizes sizes = AttachPackedWeights(*lm.model, std::move(lm.packed));
  EXPECT_LT(sizes.float_bytes, sizes.packed_bytes);
  std::vector<int64_t> tokens = {1};
  for (int32_t t : reference.tokenizer->Encode("Once upon a time, there was a little girl named Lily. She liked to"))
    tokens.push_back(t);
  const torch::Tensor ids = torch::tensor(tokens).unsqueeze(0);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = torch::log_softmax(reference.model->forward(ids), -1);
  const torch::Tensor got = torch::log_softmax(lm.model->forward(ids), -1);
  const double kl = (expected.exp() * (expected - got)).sum(-1).mean().item<double>();
  EXPECT_LT(kl, 0.002);
}

}  // namespace
}  // namespace atq
