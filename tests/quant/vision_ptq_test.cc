// Vision post-training quantization: BatchNorm folding, weight scales on known weights, activation ranges on
// known distributions, the attention ranking loss, and the whole pass on a small CNN.
#include "quant/vision_ptq.h"

#include "grid/quantized_weight.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/classifiers.h"
#include "models/quant_layers.h"
#include "quant/batchnorm_fold.h"
#include "quant/ranking_attention.h"
#include "test_util.h"

namespace atq {
namespace {

// Gives every BatchNorm of `model` statistics and affine parameters far from the identity.
void RandomizeBatchNorms(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_modules()) {
    if (auto* bn = item.value()->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.uniform_(0.5, 2);
      bn->bias.normal_(0, 0.5);
      bn->running_mean.normal_(0, 0.5);
      bn->running_var.uniform_(0.2, 3);
    } else if (auto* bn1 = item.value()->as<torch::nn::BatchNorm1dImpl>()) {
      bn1->weight.uniform_(0.5, 2);
      bn1->bias.normal_(0, 0.5);
      bn1->running_mean.normal_(0, 0.5);
      bn1->running_var.uniform_(0.2, 3);
    }
  }
}

TEST(BatchNormFoldTest, EvaluationOutputsAreUnchanged) {
  torch::manual_seed(1);
  for (const std::string name : {"cnn", "resnet18"}) {
    auto model = MakeClassifier(name, 1, 10);
    RandomizeBatchNorms(*model);
    model->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor images = torch::randn({4, 1, 28, 28});
    const torch::Tensor before = model->forward(images);
    const int folded = FoldBatchNorms(*model);
    EXPECT_EQ(folded, name == "cnn" ? 5 : 20) << name;
    const torch::Tensor after = model->forward(images);
    // Float32 rounding of the reassociated products only: a few ulps of the logits' magnitude.
    EXPECT_LE((after - before).abs().max().item<double>(), 1e-5 * before.abs().max().item<double>()) << name;
    // Every BatchNorm is now the identity, and every folded layer has a bias.
    for (const auto& [layer, norm] : model->BatchNormPairs()) {
      const auto parameters = model->named_parameters();
      EXPECT_NE(parameters.find(layer + ".bias"), nullptr) << layer;
      EXPECT_TRUE(torch::equal(parameters[norm + ".weight"], torch::ones_like(parameters[norm + ".weight"])));
    }
  }
}

TEST(VisionPtqTest, MseClipOnKnownWeights) {
  // Row [-1, 0, 0.5, 1] at 2 bits (levels -2..1 times the scale): a clip c in [2/3, 1) costs 2 (1 - c)^2 +
  // (0.5 - c)^2, least at c = 5/6, below 2/3 -1 rounds to -2c and costs more; the candidate grid (steps of 0.01)
  // holds 0.83. The second row is the first times 10.
  const torch::Tensor weight = torch::tensor({-1.0f, 0.0f, 0.5f, 1.0f, -10.0f, 0.0f, 5.0f, 10.0f}).reshape({2, 4});
  VisionPtqOptions options;
  const WeightGrid grid = VisionWeightGrid({2, 8, false}, options);
  EXPECT_EQ(grid.clip, ClipRule::kMse);
  const QuantizedWeight channel = QuantizeRtn(weight, grid);
  ASSERT_EQ(channel.scales.numel(), 2);
  EXPECT_NEAR(channel.scales[0][0].item<double>(), 0.83, 1e-6);
  EXPECT_NEAR(channel.scales[1][0].item<double>(), 8.3, 1e-5);
  EXPECT_TRUE(torch::allclose(channel.values[0], torch::tensor({-0.83f, 0.0f, 0.83f, 0.83f})));
  options.per_channel = false;
  const QuantizedWeight tensor = QuantizeRtn(weight, VisionWeightGrid({2, 8, false}, options));
  EXPECT_TRUE(torch::equal(tensor.scales[0], tensor.scales[1]));
  // At 8 bits every weight inside its row's range (-128..127 steps) is within half a step; the ones beyond it
  // become the range's end, and the row's error is far below the weights' own size.
  torch::manual_seed(5);
  const torch::Tensor dense = torch::randn({16, 64});
  options.per_channel = true;
  const QuantizedWeight q = QuantizeRtn(dense, VisionWeightGrid({8, 8, false}, options));
  const torch::Tensor step = q.scales;
  const torch::Tensor inside = (dense <= step * 127) & (dense >= step * -128);
  EXPECT_TRUE(((q.values - dense).abs() <= step * 0.5 + 1e-6).logical_or(inside.logical_not()).all().item<bool>());
  const torch::Tensor clipped = torch::where(dense > 0, step * 127, step * -128).expand_as(dense);
  EXPECT_TRUE(torch::allclose(q.values.masked_select(inside.logical_not()), clipped.masked_select(inside.logical_not())));
  EXPECT_LT((q.values - dense).norm().item<double>(), 0.01 * dense.norm().item<double>());
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { VisionWeightGrid({9, 8, false}, options); }).empty());
  // weight_clip kMax: the row's largest magnitude is the top level (1 step at 2 bits), nothing is clipped.
  options.weight_clip = ClipRule::kMax;
  const QuantizedWeight absmax = QuantizeRtn(weight, VisionWeightGrid({2, 8, false}, options));
  EXPECT_NEAR(absmax.scales[0][0].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(absmax.scales[1][0].item<double>(), 10.0, 1e-5);
  EXPECT_TRUE(torch::allclose(absmax.values[0].index({torch::tensor({0, 1, 3})}), torch::tensor({-1.0f, 0.0f, 1.0f})));
}

TEST(ActivationQuantizerTest, RangesOnKnownDistributions) {
  torch::manual_seed(2);
  ActivationQuantizer quantizer;
  const torch::Tensor uniform = torch::rand({1 << 16});  // [0, 1): non-negative, so the unsigned grid
  EXPECT_TRUE(torch::equal(quantizer(uniform), uniform));  // off: the identity
  quantizer->Observe();
  quantizer(uniform);
  quantizer->Calibrate(8, RangeMethod::kMinMax);
  EXPECT_TRUE(quantizer->unsigned_grid());
  EXPECT_NEAR(quantizer->scale() * 255, uniform.max().item<double>(), 1e-6);
  quantizer->Observe();
  quantizer(uniform);
  quantizer->Calibrate(8, RangeMethod::kPercentile, 0.9);
  EXPECT_NEAR(quantizer->scale() * 255, 0.9, 0.01);
  // Values on the grid pass unchanged; others round to the nearest step and clip at the top.
  const torch::Tensor on_grid = torch::tensor({0.0f, 3.0f, 255.0f}) * static_cast<float>(quantizer->scale());
  EXPECT_TRUE(torch::allclose(quantizer(on_grid), on_grid));
  EXPECT_NEAR(quantizer(torch::tensor({5.0f}))[0].item<double>(), 255 * quantizer->scale(), 1e-6);
  EXPECT_EQ(quantizer(torch::tensor({-1.0f}))[0].item<double>(), 0.0);

  // A standard normal at 4 bits (codes -7..7): the MSE-optimal clip is about 2.5 sigma (Banner et al. 2019
  // give 2.55 for a Gaussian at 4 bits); min-max would take the sample maximum, over 4 sigma here.
  const torch::Tensor gaussian = torch::randn({1 << 18});
  quantizer->Observe();
  quantizer(gaussian);
  quantizer->Calibrate(4, RangeMethod::kMse);
  EXPECT_FALSE(quantizer->unsigned_grid());
  EXPECT_GT(quantizer->scale() * 7, 2.2);
  EXPECT_LT(quantizer->scale() * 7, 2.9);
  ActivationQuantizer unobserved;
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { unobserved->Calibrate(8, RangeMethod::kMse); }).empty());
}

TEST(ActivationQuantizerTest, AffineGridPutsZeroOnACodeAndSpansBothEnds) {
  ActivationQuantizer quantizer;
  // Observed values from -1 to 3: 8-bit affine min-max has scale 4 / 255 and zero point round(1 / scale) = 64
  // (63.75 rounded), so the range is [-64, 191] steps.
  const torch::Tensor values = torch::linspace(-1, 3, 4001);
  quantizer->Observe();
  quantizer(values);
  quantizer->Calibrate(8, RangeMethod::kMinMax, 0.9999, /*affine=*/true);
  const double scale = 4.0 / 255;
  EXPECT_TRUE(quantizer->unsigned_grid());
  EXPECT_NEAR(quantizer->scale(), scale, 1e-9);
  EXPECT_EQ(quantizer->zero_point(), 64);
  EXPECT_EQ(quantizer(torch::zeros({1}))[0].item<double>(), 0.0);
  EXPECT_NEAR(quantizer(torch::tensor({-5.0f}))[0].item<double>(), -64 * scale, 1e-6);  // clipped at the bottom
  EXPECT_NEAR(quantizer(torch::tensor({5.0f}))[0].item<double>(), 191 * scale, 1e-6);   // and at the top
  EXPECT_NEAR(quantizer(torch::tensor({1.0f}))[0].item<double>(), 64 * scale, 1e-6);    // 63.75 steps rounds up
  // Non-negative values keep the plain unsigned grid (no zero point).
  quantizer->Observe();
  quantizer(values.clamp_min(0));
  quantizer->Calibrate(8, RangeMethod::kMinMax, 0.9999, /*affine=*/true);
  EXPECT_EQ(quantizer->zero_point(), 0);
  EXPECT_NEAR(quantizer->scale() * 255, 3.0, 1e-6);

  // SiLU of a standard normal (minimum -0.2785 at x = -1.2785): the symmetric grid spends half its codes on
  // [-max, 0); the affine one puts them on [-0.28, max], a step about 1.9x finer, so its error is about 3.5x
  // smaller (2.5x asked, for the clip searches' slack).
  torch::manual_seed(3);
  const torch::Tensor silu = torch::silu(torch::randn({1 << 16}));
  const auto error = [&](bool affine) {
    ActivationQuantizer q;
    q->Observe();
    q(silu);
    q->Calibrate(8, RangeMethod::kMse, 0.9999, affine);
    return (q(silu) - silu).pow(2).mean().item<double>();
  };
  EXPECT_LT(2.5 * error(true), error(false));
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { quantizer->SetGrid(8, 0.1, /*unsigned_grid=*/false, 3); }).empty());
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { quantizer->SetGrid(8, 0.1, true, 256); }).empty());
}

TEST(RankingAttentionTest, LossIsZeroWhenOrderIsKeptAndCountsSwaps) {
  const torch::Tensor reference = torch::randn({2, 3, 5, 5});
  EXPECT_EQ(AttentionRankingLoss(reference, reference * 2 + 1).item<double>(), 0.0);
  EXPECT_EQ(AttentionRankingLoss(reference, reference.round()).item<double>(), 0.0);  // ties are not misorders
  // Row [1, 2, 3] scored [1, 3, 2]: the pairs (2, 3) and (3, 2) are swapped by 1 each; 2 over 9 ordered pairs.
  const torch::Tensor row = torch::tensor({{1.0f, 2.0f, 3.0f}});
  EXPECT_NEAR(AttentionRankingLoss(row, torch::tensor({{1.0f, 3.0f, 2.0f}})).item<double>(), 2.0 / 9, 1e-7);
}

TEST(RankingAttentionTest, SearchKeepsOrderAtLeastAsWellAsMinMax) {
  torch::manual_seed(3);
  const torch::Tensor queries = torch::randn({4, 2, 10, 8}) * torch::linspace(0.2, 3, 8);
  const torch::Tensor keys = torch::randn({4, 2, 10, 8});
  ActivationQuantizer query, key;
  query->Observe(1 << 18, 1);
  key->Observe(1 << 18, 1);
  query(queries);
  key(keys);
  CalibrateAttentionRanking(*query, *key, 4, /*weight=*/1e6);
  const torch::Tensor reference = torch::matmul(queries, keys.transpose(-2, -1));
  const double searched =
      AttentionRankingLoss(reference, torch::matmul(query(queries), key(keys).transpose(-2, -1))).item<double>();
  ActivationQuantizer query_max, key_max;
  query_max->SetGrid(4, queries.abs().max().item<double>() / 7, false);
  key_max->SetGrid(4, keys.abs().max().item<double>() / 7, false);
  const double min_max =
      AttentionRankingLoss(reference, torch::matmul(query_max(queries), key_max(keys).transpose(-2, -1))).item<double>();
  EXPECT_LE(searched, min_max);
  EXPECT_EQ(query->bits(), 4);
  ActivationQuantizer nothing_kept;
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { CalibrateAttentionRanking(*nothing_kept, *key, 4, 1); }).empty());
}

TEST(VisionPtqTest, QuantizesACnnAndReportsEveryLayer) {
  torch::manual_seed(4);
  auto model = MakeClassifier("cnn", 1, 10);
  RandomizeBatchNorms(*model);
  model->eval();
  const torch::Tensor images = torch::randn({64, 1, 28, 28});
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    reference = model->forward(images);
  }
  const auto logit_error = [&](const VisionPtqOptions& options) {
    auto copy = MakeClassifier("cnn", 1, 10);
    {
      torch::NoGradGuard no_grad;
      auto target = copy->named_parameters();
      for (const auto& item : model->named_parameters()) target[item.key()].copy_(item.value());
      auto buffers = copy->named_buffers();
      for (const auto& item : model->named_buffers()) buffers[item.key()].copy_(item.value());
    }
    const VisionPtqReport report = QuantizeClassifier(*copy, images, options);
    EXPECT_EQ(report.layers.size(), 6u);
    EXPECT_EQ(report.folded_batchnorms, 5);
    torch::NoGradGuard no_grad;
    return std::make_pair((copy->forward(images) - reference).norm().item<double>() / reference.norm().item<double>(),
                          report);
  };
  VisionPtqOptions w8a8;
  const auto [error8, report8] = logit_error(w8a8);
  EXPECT_LT(error8, 0.02);
  for (const VisionLayerReport& layer : report8.layers) {
    EXPECT_GT(layer.activation_scale, 0) << layer.name;
    EXPECT_LT(layer.weight_error, 1e-3) << layer.name;
  }
  EXPECT_FALSE(report8.layers[0].activation_unsigned);  // raw normalized pixels
  EXPECT_TRUE(report8.layers[1].activation_unsigned);   // after ReLU
  // conv1: 32 x 9 weights at 8 bits (9 bytes per row) + 32 f32 scales + the folded bias (32 f32).
  EXPECT_EQ(report8.layers[0].packed_bytes, 32 * 9 + 32 * 4 + 32 * 4);
  VisionPtqOptions w4a4 = w8a8;
  w4a4.bits = {4, 4, false};
  EXPECT_GT(logit_error(w4a4).first, error8);
  VisionPtqOptions mixed = w8a8;
  mixed.layers["fc2"] = {kFloatBits, kFloatBits, false};
  const auto [mixed_error, mixed_report] = logit_error(mixed);
  EXPECT_EQ(mixed_report.layers.back().packed_bytes, (128 * 10 + 10) * 4);
  EXPECT_EQ(mixed_report.layers.back().activation_scale, 0);
  mixed.layers["no_such_layer"] = {8, 8, false};
  EXPECT_NE(testutil::ErrorMessageOf([&] { logit_error(mixed); }).find("no_such_layer"), std::string::npos);
}

TEST(VisionPtqTest, LayersTrainedTernaryKeepTheirValuesThroughFolding) {
  torch::manual_seed(5);
  auto model = MakeClassifier("cnn", 1, 10);
  RandomizeBatchNorms(*model);
  const auto layers = model->QuantLayers();
  VisionPtqOptions options;
  options.bits = {8, kFloatBits, false};
  for (size_t i = 0; i < layers.size(); ++i) {
    if (i == 0 || i + 1 == layers.size()) {
      options.layers[layers[i].first] = {kFloatBits, kFloatBits, false};  // first and last stay float
      continue;
    }
    LayerQuantConfig config;
    config.quantized = true;
    config.grid.threshold_rule = ThresholdRule::kRatio;
    config.grid.threshold_value = 0.7;
    config.grid.granularity = Granularity::kTensor;  // one scale per layer, per channel once BatchNorm is folded in
    layers[i].second->SetQuantConfig(config);
  }
  model->eval();
  const torch::Tensor images = torch::randn({32, 1, 28, 28});
  torch::NoGradGuard no_grad;
  const torch::Tensor reference = model->forward(images);
  const VisionPtqReport report = QuantizeClassifier(*model, torch::Tensor(), options);
  EXPECT_EQ(report.folded_batchnorms, 5);
  EXPECT_LT((model->forward(images) - reference).abs().max().item<double>(),
            1e-4 * reference.abs().max().item<double>());
  for (size_t i = 1; i + 1 < layers.size(); ++i) {
    const VisionLayerReport& row = report.layers[i];
    EXPECT_TRUE(row.trained && row.bits.ternary) << row.name;
    EXPECT_EQ(layers[i].second->quant_config().mode(), WeightMode::kFull) << row.name;
    const torch::Tensor rows = layers[i].second->FloatWeight().flatten(1).abs();  // [R, n]
    for (int64_t r = 0; r < rows.size(0); ++r) {
      EXPECT_LE(std::get<0>(at::_unique(rows[r])).numel(), 2) << row.name << " row " << r << " is not ternary";
    }
    const int64_t out = rows.size(0), in = rows.size(1);
    EXPECT_EQ(row.packed_bytes, out * ((in * 2 + 7) / 8) + out * 4 + out * 4) << row.name;  // codes, scales, bias
  }
  EXPECT_FALSE(report.layers.front().trained);
}

}  // namespace
}  // namespace atq
