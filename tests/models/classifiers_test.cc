// The classifiers: shapes, parameter counts, layer names, quantization switches, and ResNet-18 against
// torchvision's reference outputs from the fixture checkpoint.
#include "models/classifiers.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/safetensors.h"
#include "test_util.h"
#include "torch/tensor_bridge.h"
#include "models/classifier_checkpoint.h"
#include "util/error.h"

namespace atq {
namespace {

int64_t ParameterCount(torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& parameter : module.parameters()) count += parameter.numel();
  return count;
}

std::vector<std::string> Names(ClassifierModule& model) {
  std::vector<std::string> names;
  for (const auto& layer : model.QuantLayers()) names.push_back(layer.first);
  return names;
}

TEST(ClassifiersTest, ShapesAndParameterCounts) {
  struct Case {
    std::string name;
    int64_t parameters;
  };
  // mlp: 784*256+256 + 256*128+128 + 128*10+10. cnn: convs 288+9216+18432+36864, BatchNorms 2*(32+32+64+64+128),
  // fc1 3136*128, fc2 1290. resnet18: torchvision's 11,689,512 - 7x7x3 stem 9408 + 3x3x1 stem 576 - fc 513,000
  // + fc 5,130 (the fixture's reference.json says the same).
  for (const Case& c : {Case{"mlp", 235146}, Case{"cnn", 468138}, Case{"resnet18", 11172810}}) {
    const std::shared_ptr<ClassifierModule> model = MakeClassifier(c.name, 1, 10);
    EXPECT_EQ(ParameterCount(*model), c.parameters) << c.name;
    model->eval();
    torch::NoGradGuard no_grad;
    EXPECT_EQ(model->forward(torch::randn({2, 1, 28, 28})).sizes(), torch::IntArrayRef({2, 10})) << c.name;
  }
  const auto rgb = MakeClassifier("cnn", 3, 7, 32);
  rgb->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(rgb->forward(torch::randn({2, 3, 32, 32})).sizes(), torch::IntArrayRef({2, 7}));
}

TEST(ClassifiersTest, UnknownNameListsTheNames) {
  try {
    MakeClassifier("vgg", 1, 10);
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("mlp, cnn, resnet18"), std::string::npos) << error.what();
  }
  EXPECT_THROW(MakeClassifier("cnn", 1, 10, 30), Error);
  EXPECT_THROW(MakeClassifier("mlp", 0, 10), Error);
}

TEST(ClassifiersTest, QuantLayersInOrderWithParameterPaths) {
  EXPECT_EQ(Names(*MakeClassifier("mlp", 1, 10)), std::vector<std::string>({"fc1", "fc2", "fc3"}));
  EXPECT_EQ(Names(*MakeClassifier("cnn", 1, 10)),
            std::vector<std::string>({"conv1", "conv2", "conv3", "conv4", "fc1", "fc2"}));
  const std::vector<std::string> resnet = Names(*MakeClassifier("resnet18", 1, 10));
  ASSERT_EQ(resnet.size(), 21u);  // stem + 16 block convs + 3 downsamples + fc
  EXPECT_EQ(resnet.front(), "conv1");
  EXPECT_EQ(resnet[1], "layer1.0.conv1");
  EXPECT_NE(std::find(resnet.begin(), resnet.end(), "layer2.0.downsample.0"), resnet.end());
  EXPECT_EQ(resnet.back(), "fc");
}

TEST(ClassifiersTest, ApplyQuantConfigKeepsFirstAndLastFullByDefault) {
  const auto model = MakeClassifier("cnn", 1, 10);
  LayerQuantConfig config;
  config.quantized = true;
  ApplyQuantConfig(*model, config);
  const auto layers = model->QuantLayers();
  for (size_t i = 0; i < layers.size(); ++i) {
    const bool edge = i == 0 || i + 1 == layers.size();
    EXPECT_EQ(layers[i].second->quant_config().mode(), edge ? WeightMode::kFull : WeightMode::kTernary)
        << layers[i].first;
  }
  ApplyQuantConfig(*model, config, /*quantize_first_and_last=*/true);
  for (const auto& layer : model->QuantLayers()) EXPECT_EQ(layer.second->quant_config().mode(), WeightMode::kTernary);
  // A ternary CNN still trains: one step gives gradients to every latent weight.
  model->train();
  const torch::Tensor loss = model->forward(torch::randn({4, 1, 28, 28})).logsumexp(1).mean();
  loss.backward();
  for (const auto& parameter : model->named_parameters()) {
    EXPECT_TRUE(parameter.value().grad().defined()) << parameter.key();
  }
}

TEST(ClassifiersTest, ResNet18LoadsTheFixtureByNameAndMatchesTorchvision) {
  ATQ_FIXTURE_OR_SKIP(model_path, "resnet18/model.safetensors");
  ATQ_FIXTURE_OR_SKIP(outputs_path, "resnet18/reference_outputs.safetensors");
  const auto model = MakeClassifier("resnet18", 1, 10);
  auto parameters = model->named_parameters();
  auto buffers = model->named_buffers();
  const SafetensorsFile file = SafetensorsFile::Open(model_path);
  ASSERT_EQ(file.tensors().size(), parameters.size() + buffers.size());
  {
    torch::NoGradGuard no_grad;
    for (const TensorInfo& info : file.tensors()) {
      torch::Tensor* target = parameters.find(info.name);
      if (target == nullptr) target = buffers.find(info.name);
      ASSERT_NE(target, nullptr) << info.name << " has no counterpart in the model";
      const torch::Tensor source = ToTorch(info, file.Data(info));
      ASSERT_EQ(source.sizes(), target->sizes()) << info.name;
      target->copy_(source);
    }
  }
  const SafetensorsFile outputs = SafetensorsFile::Open(outputs_path);
  const TensorInfo* images = outputs.Find("images");
  const TensorInfo* logits = outputs.Find("logits");
  ASSERT_TRUE(images != nullptr && logits != nullptr);
  // The fixture's logits were computed with BatchNorm in training mode (statistics of these 16 images, not the
  // running statistics): in eval mode every logit differs by up to 0.77 from them, in training mode they agree to
  // float32 rounding. So compare in training mode; ResNet-18 has no dropout, and the running statistics this
  // updates are not used here.
  model->train();
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = ToTorch(*logits, outputs.Data(*logits));
  const torch::Tensor actual = model->forward(ToTorch(*images, outputs.Data(*images)));
  // Float32 sums over ~4,600 terms per output through 18 layers, in another order than PyTorch's kernels:
  // relative differences of a few 1e-6 per layer. Measured: 8.3e-7 at most; 1e-4 leaves a wide margin.
  const double difference = (actual - expected).abs().max().item<double>();
  RecordProperty("max_abs_logit_difference", fmt::format("{:.3g}", difference));
  EXPECT_LE(difference, 1e-4);
  EXPECT_TRUE(torch::equal(actual.argmax(1), expected.argmax(1)));
  // With the running statistics (how the model is meant to be used) it classifies all 16 images right: these
  // are the labels of the first 16 Fashion-MNIST test images (t10k-labels-idx1-ubyte).
  model->eval();
  const torch::Tensor evaluated = model->forward(ToTorch(*images, outputs.Data(*images)));
  const torch::Tensor labels = torch::tensor({9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1}, torch::kLong);
  EXPECT_TRUE(torch::equal(evaluated.argmax(1), labels)) << evaluated.argmax(1);
}

// torchvision's file has no config.json: the architecture comes from the caller, and the float32
// num_batches_tracked the fixture stores becomes the model's int64 counter.
TEST(ClassifiersTest, ResNet18FixtureLoadsAsAForeignCheckpoint) {
  ATQ_FIXTURE_OR_SKIP(model_path, "resnet18/model.safetensors");
  ClassifierConfig config;
  config.model = "resnet18";
  config.dataset = "fashion_mnist";
  config.normalization = kFashionMnistNormalization;
  const LoadedClassifier loaded = LoadForeignClassifier(model_path, config);
  EXPECT_FALSE(loaded.model->is_training());
  ASSERT_EQ(loaded.config.layers.size(), 21u);
  EXPECT_EQ(loaded.config.layers.front().second.mode(), WeightMode::kFull);
  const SafetensorsFile file = SafetensorsFile::Open(model_path);
  const TensorInfo* stored = file.Find("bn1.num_batches_tracked");
  ASSERT_NE(stored, nullptr);
  ASSERT_EQ(stored->type, QuantType::kF32);
  const torch::Tensor counter = loaded.model->named_buffers()["bn1.num_batches_tracked"];
  EXPECT_EQ(counter.scalar_type(), torch::kLong);
  EXPECT_EQ(counter.item<int64_t>(), static_cast<int64_t>(ToTorch(*stored, file.Data(*stored)).item<float>()));
}

// Timing probe for the CNN and narrower variants (run with --gtest_also_run_disabled_tests): forward + backward
// + SGD step on batches of 256, scaled to 60,000 images.
TEST(ClassifiersTest, DISABLED_CnnEpochTiming) {
  torch::set_num_threads(2);
  struct Variant { int64_t width1, width2; bool ternary; };
  for (const Variant v : {Variant{32, 64, false}, Variant{32, 64, true}, Variant{16, 32, false}, Variant{16, 64, false}}) {
    const bool ternary = v.ternary;
    const auto model = std::make_shared<CnnClassifier>(1, 10, 28, v.width1, v.width2);
    if (ternary) {
      LayerQuantConfig config;
      config.quantized = true;
      ApplyQuantConfig(*model, config);
    }
    model->train();
    torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    const torch::Tensor images = torch::randn({256, 1, 28, 28});
    const torch::Tensor labels = torch::randint(0, 10, {256}, torch::kLong);
    constexpr int kBatches = 10;
    double seconds = 0;
    for (int i = 0; i < kBatches + 2; ++i) {
      const auto start = std::chrono::steady_clock::now();
      optimizer.zero_grad();
      torch::nn::functional::cross_entropy(model->forward(images), labels).backward();
      optimizer.step();
      if (i >= 2) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    std::printf("cnn %ld/%ld %s: %.3f s per batch of 256, %.1f s per 60k-image epoch\n", v.width1, v.width2, ternary ? "ternary" : "full",
                seconds / kBatches, seconds / kBatches * 60000 / 256);
  }
}

}  // namespace
}  // namespace atq
