// Perplexity protocols: window layouts on the fixtures' token counts, and the measured perplexity against a
// plain per-window loop on a tiny model.
#include <cmath>
#include <set>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/perplexity.h"
#include "util/error.h"

namespace atq {
namespace {

int64_t Scored(const std::vector<PerplexityWindow>& windows) {
  int64_t total = 0;
  for (const PerplexityWindow& w : windows) total += w.end - w.begin - w.score_from;
  return total;
}

PerplexityOptions Options(PerplexityProtocol protocol, int64_t ctx, int64_t stride = 0) {
  PerplexityOptions options;
  options.protocol = protocol;
  options.ctx = ctx;
  options.stride = stride;
  return options;
}

// reference.json of gpt2-mini / llama-mini: 193,630 test tokens.
TEST(PerplexityWindows, FixtureScoredTokenCounts) {
  EXPECT_EQ(Scored(PerplexityWindows(Options(PerplexityProtocol::kChunked, 512), 193630)), 193158);
  EXPECT_EQ(Scored(PerplexityWindows(Options(PerplexityProtocol::kChunked, 128), 193630)), 192024);
  EXPECT_EQ(Scored(PerplexityWindows(Options(PerplexityProtocol::kSliding, 512, 256), 193630)), 193629);
}

TEST(PerplexityWindows, SlidingScoresEveryTokenOnceWithFullContext) {
  for (int64_t n : {600, 1000, 1024, 1025}) {
    const auto windows = PerplexityWindows(Options(PerplexityProtocol::kSliding, 512, 256), n);
    std::set<int64_t> targets;
    for (const PerplexityWindow& w : windows) {
      EXPECT_LE(w.end - w.begin, 512);
      for (int64_t p = w.begin + w.score_from; p < w.end; ++p) EXPECT_TRUE(targets.insert(p).second) << p;
    }
    EXPECT_EQ(static_cast<int64_t>(targets.size()), n - 1);
    EXPECT_EQ(*targets.begin(), 1);
    EXPECT_EQ(windows.front().score_from, 1);
    EXPECT_EQ(windows[1].score_from, 256);  // the second window adds what the first had not seen
  }
}

// stories260K/README.md: 1535 chunks at c=256 and 767 at c=512; positions c/2 .. c-1 scored.
TEST(PerplexityWindows, LlamaCppChunks) {
  for (int64_t n : {392960, 393215}) {
    const auto c256 = PerplexityWindows(Options(PerplexityProtocol::kLlamaCpp, 256), n);
    const auto c512 = PerplexityWindows(Options(PerplexityProtocol::kLlamaCpp, 512), n);
    EXPECT_EQ(c256.size(), 1535u);
    EXPECT_EQ(c512.size(), 767u);
    EXPECT_EQ(Scored(c256), 1535 * 127);
    EXPECT_TRUE(c256[3].bos_first);
    EXPECT_EQ(c256[3].begin, 768);
  }
}

// A model whose logits depend on position and token, so every protocol's arithmetic shows.
class ToyLm : public CausalLmImpl {
 public:
  ToyLm() : CausalLmImpl(Config()) {
    table = register_parameter("table", torch::randn({Config().vocab_size, Config().vocab_size}, torch::kFloat64));
  }
  static LmConfig Config() {
    LmConfig c;
    c.vocab_size = 11;
    c.max_positions = 4096;
    return c;
  }
  // logits[t] = table[ids[t]] + 0.1 * t (position-dependent, including each row's own position)
  torch::Tensor forward(const torch::Tensor& ids, KvCache* = nullptr) override {
    const torch::Tensor positions = torch::arange(ids.size(1), torch::kFloat64).view({1, -1, 1});
    return table.index({ids}) + 0.1 * positions * torch::arange(11, torch::kFloat64);
  }
  // Staged: no blocks; the "hidden state" is the ids themselves.
  torch::Tensor Embed(const torch::Tensor& ids) override { return ids; }
  torch::Tensor ForwardBlock(size_t, const torch::Tensor& x) override { return x; }
  torch::Tensor Head(const torch::Tensor& x) override { return forward(x); }
  std::shared_ptr<torch::nn::Module> Block(size_t) override { return nullptr; }
  torch::Tensor table;
};

double PlainPerplexity(ToyLm& model, const std::vector<int64_t>& tokens, const std::vector<PerplexityWindow>& windows,
                       int64_t bos) {
  double nll = 0;
  int64_t count = 0;
  for (const PerplexityWindow& w : windows) {
    std::vector<int64_t> row(tokens.begin() + w.begin, tokens.begin() + w.end);
    if (w.bos_first) row[0] = bos;
    const torch::Tensor logits = model.forward(torch::tensor(row).unsqueeze(0))[0];
    for (int64_t p = w.score_from; p < w.end - w.begin; ++p) {
      nll -= torch::log_softmax(logits[p - 1], 0)[row[p]].item<double>();
      ++count;
    }
  }
  return std::exp(nll / count);
}

TEST(MeasurePerplexity, EqualsAPlainLoopForEveryProtocol) {
  torch::manual_seed(5);
  ToyLm model;
  std::vector<int32_t> text(203);
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<int32_t>((i * 7 + i / 3) % 10);
  for (const PerplexityOptions& options :
       {Options(PerplexityProtocol::kChunked, 32), Options(PerplexityProtocol::kSliding, 32, 12),
        Options(PerplexityProtocol::kLlamaCpp, 32)}) {
    std::vector<int64_t> tokens;
    if (options.protocol == PerplexityProtocol::kLlamaCpp) tokens.push_back(10);
    tokens.insert(tokens.end(), text.begin(), text.end());
    PerplexityOptions batched = options;
    batched.batch = 3;
    const PerplexityResult result = MeasurePerplexity(model, text, batched, /*bos_id=*/10);
    const auto windows = PerplexityWindows(options, static_cast<int64_t>(tokens.size()));
    EXPECT_NEAR(result.mean_nll, std::log(PlainPerplexity(model, tokens, windows, 10)), 1e-12)
        << PerplexityProtocolName(options.protocol);
    EXPECT_EQ(result.scored_tokens, Scored(windows));
    EXPECT_NEAR(std::log(result.perplexity), result.mean_nll, 1e-12);
  }
}

TEST(MeasurePerplexity, RejectsTextShorterThanAWindow) {
  ToyLm model;
  EXPECT_THROW(MeasurePerplexity(model, std::vector<int32_t>(20, 1), Options(PerplexityProtocol::kChunked, 32), 10),
               Error);
}

// llama-perplexity adds BOS only where the vocabulary does (add_bos): without it the chunks are the text's own
// tokens, the same windows and scored positions, BOS neither in front nor in place of each chunk's first token.
TEST(MeasurePerplexity, LlamaCppProtocolWithoutBos) {
  ToyLm model;
  std::vector<int32_t> text(200);
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<int32_t>(i % 7);
  const PerplexityOptions options = Options(PerplexityProtocol::kLlamaCpp, 32);
  const PerplexityResult with_bos = MeasurePerplexity(model, text, options, 10);
  const PerplexityResult without = MeasurePerplexity(model, text, options, -1);
  EXPECT_EQ(without.windows, with_bos.windows);
  EXPECT_EQ(without.scored_tokens, with_bos.scored_tokens);
  EXPECT_NE(without.mean_nll, with_bos.mean_nll);
}

}  // namespace
}  // namespace atq
