// The text-to-image parts: the cosine schedule against its closed form, DDIM's timesteps, the UNet's shapes and
// its caption mask, the sampler's per-sample seeding (the batch does not change an image), checkpoints, and a
// ternary UNet packed into one file, run through the kernels against its fake-quantized self.
#include "models/diffusion.h"

#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/packed_module.h"
#include "test_util.h"

namespace atq {
namespace {

UNetConfig TinyUNet() {
  UNetConfig config;
  config.image_size = 8;
  config.channels = 8;
  config.context_dim = 16;
  config.heads = 2;
  config.time_dim = 16;
  return config;
}

TextCondition RandomText(int64_t n, int64_t tokens, int64_t dim, const std::vector<int64_t>& lengths) {
  TextCondition text;
  text.states = torch::randn({n, tokens, dim});
  const torch::Tensor length = torch::tensor(lengths, torch::kLong);
  text.mask = torch::arange(tokens, torch::kLong).unsqueeze(0) < length.unsqueeze(1);
  text.pooled = torch::randn({n, dim});
  return text;
}

TEST(NoiseSchedule, CosineScheduleMatchesItsClosedFormAndDdimSpacesItsSteps) {
  const NoiseSchedule schedule(1000);
  const auto f = [](double u) {
    const double angle = (u / 1000.0 + 0.008) / 1.008 * M_PI / 2;
    return std::cos(angle) * std::cos(angle);
  };
  // Where no beta is capped, alpha_bar(t) = f(t + 1) / f(0) (the product telescopes).
  for (const int64_t t : {0, 10, 499, 900}) {
    EXPECT_NEAR(schedule.alpha_bar()[t].item<double>(), f(t + 1.0) / f(0.0), 1e-9) << t;
  }
  EXPECT_LT(schedule.alpha_bar()[999].item<double>(), 1e-4);
  EXPECT_TRUE((schedule.alpha_bar().slice(0, 1) < schedule.alpha_bar().slice(0, 0, 999)).all().item<bool>());
  EXPECT_EQ(schedule.DdimTimesteps(5), (std::vector<int64_t>{999, 749, 500, 250, 0}));
  EXPECT_EQ(schedule.DdimTimesteps(1), (std::vector<int64_t>{999}));
  const torch::Tensor x0 = torch::ones({1, 1, 2, 2}), noise = torch::full({1, 1, 2, 2}, 2.0);
  const double a = schedule.alpha_bar()[499].item<double>();
  EXPECT_NEAR(schedule.AddNoise(x0, noise, torch::tensor({499}, torch::kLong))[0][0][0][0].item<double>(),
              std::sqrt(a) + 2 * std::sqrt(1 - a), 1e-6);
  EXPECT_NE(testutil::ErrorMessageOf([&] { schedule.DdimTimesteps(0); }).find("DDIM"), std::string::npos);
}

TEST(UNet, ShapesAndTheCaptionMask) {
  torch::manual_seed(1);
  UNet unet(TinyUNet());
  unet->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({3, 1, 8, 8});
  const torch::Tensor t = torch::tensor({0, 500, 999}, torch::kLong);
  TextCondition text = RandomText(3, 5, 16, {5, 2, 1});
  const torch::Tensor eps = unet->forward(x, t, text);
  ASSERT_EQ(eps.sizes(), x.sizes());
  // The states past each caption's length are never attended to.
  TextCondition changed = text;
  changed.states = text.states + 100 * text.mask.logical_not().unsqueeze(2).to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(unet->forward(x, t, changed), eps, 1e-5, 1e-5));
  // The timestep and the caption both matter.
  EXPECT_GT((unet->forward(x, t.flip({0}), text) - eps).abs().max().item<double>(), 1e-4);
  TextCondition other = RandomText(3, 5, 16, {5, 2, 1});
  EXPECT_GT((unet->forward(x, t, other) - eps).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(unet->QuantLayers().front().first, "time1");
}

TEST(UNet, SamplesDependOnTheirSeedAndIndexNotTheBatch) {
  torch::manual_seed(2);
  UNet unet(TinyUNet());
  const NoiseSchedule schedule;
  const TextCondition text = RandomText(3, 5, 16, {5, 2, 3});
  const TextCondition empty = RandomText(1, 5, 16, {1});
  SamplerOptions options;
  options.steps = 4;
  options.seed = 9;
  options.batch = 3;
  std::vector<int64_t> seen;
  options.on_timestep = [&](int64_t t) { seen.push_back(t); };
  const torch::Tensor all = SampleDdim(*unet, schedule, text, empty, options);
  ASSERT_EQ(all.sizes(), torch::IntArrayRef({3, 1, 8, 8}));
  EXPECT_EQ(seen, (std::vector<int64_t>{999, 666, 333, 0}));
  EXPECT_LE(all.abs().max().item<double>(), 1.0);
  options.batch = 2;
  options.on_timestep = nullptr;
  EXPECT_TRUE(torch::allclose(SampleDdim(*unet, schedule, text, empty, options), all, 1e-5, 1e-6));
  options.seed = 10;
  EXPECT_GT((SampleDdim(*unet, schedule, text, empty, options) - all).abs().max().item<double>(), 1e-3);
  const torch::Tensor pixels = ToPixels(all);
  EXPECT_EQ(pixels.scalar_type(), torch::kUInt8);
  EXPECT_EQ(pixels.sizes(), torch::IntArrayRef({3, 8, 8}));
}

TEST(UNet, CheckpointReadsBackAndRefusesOtherFolders) {
  torch::manual_seed(3);
  UNet unet(TinyUNet());
  unet->eval();
  testutil::TempDir dir;
  SaveUNet(dir.path(), *unet, {{"note", 1}});
  nlohmann::json config;
  UNet loaded = LoadUNet(dir.path(), &config);
  EXPECT_EQ(config["note"], 1);
  const torch::Tensor x = torch::randn({2, 1, 8, 8});
  const torch::Tensor t = torch::tensor({3, 700}, torch::kLong);
  const TextCondition text = RandomText(2, 4, 16, {4, 1});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(loaded->forward(x, t, text), unet->forward(x, t, text)));
  config["unet"]["channels"] = 12;  // not a multiple of the GroupNorm groups
  std::ofstream(dir.File("config.json")) << config.dump();
  EXPECT_NE(testutil::ErrorMessageOf([&] { LoadUNet(dir.path()); }).find("UNet sizes out of range"),
            std::string::npos);
  std::ofstream(dir.File("config.json")) << R"({"model": "image-text"})";
  EXPECT_NE(testutil::ErrorMessageOf([&] { LoadUNet(dir.path()); }).find("not a text-to-image checkpoint"),
            std::string::npos);
}

TEST(UNet, TernaryUNetPacksIntoOneFileAndRunsThroughTheKernels) {
  torch::manual_seed(5);
  UNet unet(TinyUNet());
  LayerQuantConfig ternary;
  ternary.quantized = true;
  ternary.grid.threshold_value = 0.4;
  ternary.rpb_fraction = 0.01;
  int64_t quantized = 0;
  for (const auto& [name, layer] : unet->QuantLayers()) {
    if (name == "conv_in" || name == "conv_out") continue;  // kept float as a QAT run keeps them
    layer->SetQuantConfig(ternary);
    ++quantized;
  }
  unet->eval();
  testutil::TempDir dir;
  const std::string path = dir.File("model.t2.safetensors");
  EXPECT_GT(ExportPackedUNet(*unet, {{"note", 2}}, QuantType::kTernary2, path), 0);
  EXPECT_TRUE(IsPackedUNet(path));
  nlohmann::json config;
  UNet kernels = LoadUNetAny(path, PackedRun::kKernels, &config);
  UNet dequantized = LoadUNetAny(path, PackedRun::kDequantized);
  EXPECT_EQ(config["note"], 2);
  int64_t runs_packed = 0;
  for (const auto& [name, layer] : kernels->QuantLayers()) {
    runs_packed += dynamic_cast<const QuantWeightLayer*>(layer)->RunsPackedKernels();
  }
  EXPECT_EQ(runs_packed, quantized);

  const torch::Tensor x = torch::randn({3, 1, 8, 8});
  const torch::Tensor t = torch::tensor({5, 400, 999}, torch::kLong);
  const TextCondition text = RandomText(3, 4, 16, {4, 2, 1});
  torch::NoGradGuard no_grad;
  const torch::Tensor reference = unet->forward(x, t, text);
  const double scale = reference.abs().max().item<double>();
  EXPECT_LT((dequantized->forward(x, t, text) - reference).abs().max().item<double>(), 1e-4 * scale);
  // The kernels quantize every layer's input to int8 per row: a few percent of the output's range at most.
  EXPECT_LT((kernels->forward(x, t, text) - reference).abs().max().item<double>(), 0.05 * scale);

  // A packed file of another kind is refused by name.
  WritePackedModule(*unet, unet->QuantLayers(), QuantType::kTernary2, {{kPackedFormatKey, "atq-packed-other/1"}},
                     dir.File("other.safetensors"));
  const std::string message =
      testutil::ErrorMessageOf([&] { LoadUNetAny(dir.File("other.safetensors"), PackedRun::kKernels); });
  EXPECT_NE(message.find("other.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("atq-packed-text-to-image/1"), std::string::npos) << message;
}

}  // namespace
}  // namespace atq
