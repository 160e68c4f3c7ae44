// Post-training quantization of the text-to-image model: weights are exactly the vision PTQ's per-channel grid,
// activation grids are calibrated per timestep range and switched by the sampler, W8A8 stays close to float while
// fewer bits stray further, and bad settings are refused with a message.
#include "quant/diffusion_ptq.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "grid/quantized_weight.h"
#include "quant/vision_sensitivity.h"
#include "models/quant_layers.h"
#include "test_util.h"

namespace atq {
namespace {

// The real caption file with a byte-level stand-in for GPT-2's tokenizer: the vocabulary is small and the
// wordings still differ by class.
struct TinyTextToImage {
  CaptionSet captions = LoadCaptionSet(CaptionFileFor("fashion_mnist"));
  CaptionVocabulary vocabulary{captions, [](const std::string& text) {
                                 std::vector<int32_t> ids;
                                 for (const unsigned char c : text) ids.push_back(c);
                                 return ids;
                               }};
  ImageTextModel text{nullptr};
  UNet unet{nullptr};
  std::unique_ptr<CaptionConditioner> conditioner;

  explicit TinyTextToImage(uint64_t seed) {
    torch::manual_seed(seed);
    ImageTextConfig config;
    config.vocab = vocabulary.size();
    config.context = 24;
    config.text_dim = 16;
    config.text_heads = 2;
    config.embed_dim = 16;
    text = ImageTextModel(config);
    UNetConfig unet_config;
    unet_config.image_size = 8;
    unet_config.channels = 8;
    unet_config.context_dim = 16;
    unet_config.heads = 2;
    unet_config.time_dim = 16;
    unet = UNet(unet_config);
    unet->eval();
    conditioner = std::make_unique<CaptionConditioner>(text, &vocabulary);
  }

  torch::Tensor Sample(const SamplerOptions& options) {
    const std::vector<std::string> prompts = {"a sneaker", "a pair of trousers", "a handbag", "a dress"};
    return SampleDdim(*unet, NoiseSchedule(), conditioner->Encode(prompts), conditioner->Encode({""}), options);
  }
};

DiffusionPtqOptions Options(const std::string& setting, int64_t ranges) {
  DiffusionPtqOptions options;
  options.ptq.bits = ParseBitWidths(setting);
  options.timestep_ranges = ranges;
  options.calibration_prompts = 10;
  options.sampler.steps = 8;
  return options;
}

SamplerOptions Sampler(const DiffusionPtqResult* ptq) {
  SamplerOptions sampler;
  sampler.steps = 8;
  sampler.seed = 3;
  if (ptq != nullptr) sampler.on_timestep = ptq->OnTimestep();
  return sampler;
}

double RelativeError(const torch::Tensor& a, const torch::Tensor& reference) {
  return ((a - reference).norm() / reference.norm()).item<double>();
}

TEST(TimestepActivationGrids, RangesSplitTheScheduleEvenly) {
  const TimestepActivationGrids grids({}, 4, 1000);
  EXPECT_EQ(grids.RangeOf(0), 0);
  EXPECT_EQ(grids.RangeOf(249), 0);
  EXPECT_EQ(grids.RangeOf(250), 1);
  EXPECT_EQ(grids.RangeOf(999), 3);
  const nlohmann::json json = grids.ToJson();
  ASSERT_EQ(json.size(), 4u);
  EXPECT_EQ(json[1]["timesteps"], nlohmann::json({250, 499}));
  EXPECT_EQ(json[3]["timesteps"], nlohmann::json({750, 999}));
  EXPECT_NE(testutil::ErrorMessageOf([&] { grids.RangeOf(1000); }).find("timestep 1000"), std::string::npos);
  EXPECT_NE(testutil::ErrorMessageOf([] { TimestepActivationGrids({}, 0, 1000); }).find("ranges"), std::string::npos);
}

TEST(DiffusionPtq, WeightsAreThePerChannelGridAndActivationGridsFollowTheTimestep) {
  TinyTextToImage model(1);
  // The float weights before, to compare with the grid's own rounding.
  std::vector<torch::Tensor> before;
  for (const auto& [name, layer] : model.unet->QuantLayers()) {
    before.push_back(dynamic_cast<QuantWeightLayer*>(layer)->weight.detach().clone());
  }
  const DiffusionPtqOptions options = Options("W8A8", 4);
  const DiffusionPtqResult result =
      QuantizeTextToImage(*model.unet, model.text->text(), *model.conditioner, model.captions, options);
  const NamedQuantLayers layers = model.unet->QuantLayers();
  for (size_t i = 0; i < layers.size(); ++i) {
    const torch::Tensor weight = dynamic_cast<QuantWeightLayer*>(layers[i].second)->weight;
    const QuantizedWeight expected =
        QuantizeRtn(before[i].reshape({before[i].size(0), -1}), VisionWeightGrid(options.ptq.bits, options.ptq));
    EXPECT_TRUE(torch::equal(weight.reshape({weight.size(0), -1}), expected.values)) << layers[i].first;
  }
  ASSERT_EQ(result.unet.layers.size(), layers.size());
  EXPECT_GT(result.text.layers.size(), 0u);
  // 8-bit codes and a scale per row: about a quarter of float32.
  const double ratio = static_cast<double>(result.float_bytes) /
                       static_cast<double>(result.unet.packed_bytes() + result.text.packed_bytes());
  EXPECT_GT(ratio, 3.0);
  EXPECT_LT(ratio, 4.0);

  // Every range was calibrated, and the grids the sampler selects are the stored ones.
  ASSERT_TRUE(result.grids);
  const nlohmann::json grids = result.grids->ToJson();
  ASSERT_EQ(grids.size(), 4u);
  const auto quantizers = ActivationQuantizersOf(*model.unet);
  ASSERT_FALSE(quantizers.empty());
  int differing = 0;
  for (const auto& [name, quantizer] : quantizers) {
    for (int64_t t : {999, 10}) {
      result.grids->Select(t);
      const nlohmann::json& stored = grids[result.grids->RangeOf(t)]["grids"][name];
      EXPECT_EQ(quantizer->bits(), 8) << name;
      EXPECT_DOUBLE_EQ(quantizer->scale(), stored["scale"].get<double>()) << name;
    }
    differing += grids[0]["grids"][name]["scale"] != grids[3]["grids"][name]["scale"];
  }
  // The noise level changes the ranges: most quantizers get different grids early and late.
  EXPECT_GT(differing, static_cast<int>(quantizers.size()) / 2);
  // A quantized layer's input lands on its grid.
  result.grids->Select(500);
  ActivationQuantizerImpl& input = *quantizers.front().second;
  const torch::Tensor probe = torch::randn({64});
  const torch::Tensor codes = input.forward(probe) / input.scale();
  EXPECT_TRUE(torch::allclose(codes, codes.round(), 0, 1e-3));
}

TEST(DiffusionPtq, EightBitsStayCloseToFloatAndFewerBitsStrayFurther) {
  // One UNet pass at an early and a late timestep (the grids of each range), and whole samples.
  torch::manual_seed(7);
  const torch::Tensor x = torch::randn({4, 1, 8, 8});
  const std::vector<std::string> prompts = {"a sneaker", "a pair of trousers", "a handbag", "a dress"};
  const auto predict = [&](TinyTextToImage& model, const DiffusionPtqResult* ptq, int64_t t) {
    torch::NoGradGuard no_grad;
    if (ptq != nullptr && ptq->grids) ptq->grids->Select(t);
    return model.unet->forward(x, torch::full({4}, t, torch::kLong), model.conditioner->Encode(prompts));
  };
  TinyTextToImage float_model(2);
  const torch::Tensor early = predict(float_model, nullptr, 900), late = predict(float_model, nullptr, 50);
  const torch::Tensor samples = float_model.Sample(Sampler(nullptr));
  struct Errors {
    double early, late, samples;
  };
  const auto errors = [&](const std::string& setting) {
    TinyTextToImage model(2);
    const DiffusionPtqResult result =
        QuantizeTextToImage(*model.unet, model.text->text(), *model.conditioner, model.captions, Options(setting, 2));
    return Errors{RelativeError(predict(model, &result, 900), early), RelativeError(predict(model, &result, 50), late),
                  RelativeError(model.Sample(Sampler(&result)), samples)};
  };
  const Errors w8 = errors("W8A32"), w8a8 = errors("W8A8"), w3a3 = errors("W3A3");
  // A tiny random UNet (width 8) is far less forgiving than a trained one; the bench measures the real model.
  EXPECT_LT(w8.early, 0.03);
  EXPECT_LT(w8.late, 0.03);
  EXPECT_LT(w8a8.early, 0.15);
  EXPECT_LT(w8a8.late, 0.15);
  EXPECT_LT(w8a8.early, w3a3.early);
  EXPECT_LT(w8a8.late, w3a3.late);
  EXPECT_LT(w8a8.samples, w3a3.samples);
  std::printf("relative error early/late/samples: W8 %.4f %.4f %.4f, W8A8 %.4f %.4f %.4f, W3A3 %.4f %.4f %.4f\n",
              w8.early, w8.late, w8.samples, w8a8.early, w8a8.late, w8a8.samples, w3a3.early, w3a3.late, w3a3.samples);
}

TEST(ActivationSmoothing, DivisorsFoldedIntoTheWeightLeaveTheFloatProductUnchanged) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(4);
  QuantConv2d conv(3, 5, 3, 1, 1);
  QuantLinear linear(6, 4);
  const torch::Tensor image = torch::randn({2, 3, 7, 7}) * torch::tensor({1.0f, 20.0f, 0.1f}).reshape({1, 3, 1, 1});
  const torch::Tensor rows = torch::randn({5, 6});
  const torch::Tensor conv_out = conv(image), linear_out = linear(rows);
  // The channel maxima the quantizer records are the inputs' own.
  conv->input_quant->ObserveChannelMax(1);
  conv(image);
  EXPECT_TRUE(torch::allclose(conv->input_quant->StopChannelMax(), image.abs().amax({0, 2, 3})));
  const torch::Tensor conv_divisor = torch::tensor({0.5f, 4.0f, 0.25f}), linear_divisor = torch::rand({6}) + 0.5;
  conv->weight.mul_(conv_divisor.reshape({1, 3, 1, 1}));
  conv->input_quant->SetChannelDivisor(conv_divisor, 1);
  linear->weight.mul_(linear_divisor.reshape({1, 6}));
  linear->input_quant->SetChannelDivisor(linear_divisor, -1);
  EXPECT_TRUE(torch::allclose(conv(image), conv_out, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(linear(rows), linear_out, 1e-4, 1e-5));
  // The quantizer sees the divided input: channel 1's outliers no longer set the grid.
  conv->input_quant->Observe();
  conv(image);
  conv->input_quant->Calibrate(8, RangeMethod::kMinMax);
  EXPECT_NEAR(conv->input_quant->scale() * 127, (image / conv_divisor.reshape({1, 3, 1, 1})).abs().max().item<double>(),
              1e-5);
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { linear->input_quant->SetChannelDivisor(-linear_divisor, -1); }).empty());
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { linear(torch::randn({5, 7})); }).empty());
}

TEST(DiffusionPtq, ActivationsKeptFloatByPathAndSmoothedLayers) {
  // Every quantizer's path matches "quant": W8A8 with all of them kept float draws W8A32's samples exactly.
  TinyTextToImage weights_only(5), all_float(5), probs_float(5), smoothed(5), plain(5), reference(5);
  const torch::Tensor float_samples = reference.Sample(Sampler(nullptr));
  const DiffusionPtqResult w8 = QuantizeTextToImage(*weights_only.unet, weights_only.text->text(),
                                                    *weights_only.conditioner, weights_only.captions,
                                                    Options("W8A32", 2));
  DiffusionPtqOptions keep_all = Options("W8A8", 2);
  keep_all.float_activations = "quant";
  const DiffusionPtqResult kept =
      QuantizeTextToImage(*all_float.unet, all_float.text->text(), *all_float.conditioner, all_float.captions, keep_all);
  EXPECT_TRUE(torch::equal(all_float.Sample(Sampler(&kept)), weights_only.Sample(Sampler(&w8))));
  // Only the attention probabilities kept float: they stay off in every timestep range, the rest are on.
  DiffusionPtqOptions keep_probs = Options("W8A8", 2);
  keep_probs.float_activations = "probs_quant$";
  const DiffusionPtqResult probs = QuantizeTextToImage(*probs_float.unet, probs_float.text->text(),
                                                       *probs_float.conditioner, probs_float.captions, keep_probs);
  for (const int64_t t : {900, 50}) {
    probs.grids->Select(t);
    for (const auto& [name, quantizer] : ActivationQuantizersOf(*probs_float.unet)) {
      EXPECT_EQ(quantizer->enabled(), name.find("probs_quant") == std::string::npos) << name << " at t " << t;
    }
  }
  DiffusionPtqOptions bad = Options("W8A8", 2);
  bad.float_activations = "(";
  EXPECT_NE(testutil::ErrorMessageOf([&] {
              QuantizeTextToImage(*plain.unet, plain.text->text(), *plain.conditioner, plain.captions, bad);
            }).find("not a regular expression"),
            std::string::npos);
  // Smoothing gives every layer positive divisors, counts them in the size, and stays near the float samples.
  DiffusionPtqOptions smooth = Options("W8A8", 2);
  smooth.smooth = 0.5;
  const DiffusionPtqResult smoothed_result =
      QuantizeTextToImage(*smoothed.unet, smoothed.text->text(), *smoothed.conditioner, smoothed.captions, smooth);
  int64_t divisors = 0;
  for (const auto& [name, layer] : smoothed.unet->QuantLayers()) {
    const torch::Tensor& divisor = dynamic_cast<QuantWeightLayer*>(layer)->input_quant->channel_divisor();
    ASSERT_TRUE(divisor.defined()) << name;
    EXPECT_TRUE(divisor.gt(0).all().item<bool>()) << name;
    divisors += divisor.numel();
  }
  const DiffusionPtqResult plain_result =
      QuantizeTextToImage(*plain.unet, plain.text->text(), *plain.conditioner, plain.captions, Options("W8A8", 2));
  EXPECT_GT(smoothed_result.divisor_bytes, 4 * divisors);  // the text tower's too
  EXPECT_EQ(smoothed_result.unet.packed_bytes() + smoothed_result.text.packed_bytes(),
            plain_result.unet.packed_bytes() + plain_result.text.packed_bytes() + smoothed_result.divisor_bytes);
  EXPECT_LT(RelativeError(smoothed.Sample(Sampler(&smoothed_result)), float_samples), 0.15);
  DiffusionPtqOptions weights_smoothed = Options("W8A32", 2);
  weights_smoothed.smooth = 0.5;
  EXPECT_NE(testutil::ErrorMessageOf([&] {
              QuantizeTextToImage(*plain.unet, plain.text->text(), *plain.conditioner, plain.captions,
                                  weights_smoothed);
            }).find("needs quantized activations"),
            std::string::npos);
}

TEST(DiffusionPtq, RefusesSettingsItCannotCalibrate) {
  TinyTextToImage model(3);
  DiffusionPtqOptions too_few_steps = Options("W8A8", 4);
  too_few_steps.sampler.steps = 2;
  EXPECT_NE(testutil::ErrorMessageOf([&] {
              QuantizeTextToImage(*model.unet, model.text->text(), *model.conditioner, model.captions, too_few_steps);
            }).find("never reach timestep range"),
            std::string::npos);
  DiffusionPtqOptions ternary = Options("WtA8", 1);
  EXPECT_NE(testutil::ErrorMessageOf([&] {
              QuantizeTextToImage(*model.unet, model.text->text(), *model.conditioner, model.captions, ternary);
            }).find("ternary needs training"),
            std::string::npos);
  DiffusionPtqOptions few_prompts = Options("W8A8", 1);
  few_prompts.calibration_prompts = 3;
  EXPECT_NE(testutil::ErrorMessageOf([&] {
              QuantizeTextToImage(*model.unet, model.text->text(), *model.conditioner, model.captions, few_prompts);
            }).find("calibration prompts"),
            std::string::npos);
}

}  // namespace
}  // namespace atq
