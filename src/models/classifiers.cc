// MLP, small CNN and ResNet-18 classifiers built from quantizable layers, and the MakeClassifier name table.
#include "models/classifiers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

#include "models/vit.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr double kConvDropout = 0.25;
constexpr double kFcDropout = 0.5;
constexpr int64_t kCnnHidden = 128;

}  // namespace

const std::vector<std::string>& ClassifierNames() {
  static const std::vector<std::string> names = {"mlp", "cnn", "resnet18", "vit-tiny"};
  return names;
}

std::shared_ptr<ClassifierModule> MakeClassifier(const std::string& name, int64_t in_channels, int64_t classes,
                                                 int64_t image_size, int64_t patch_size) {
  Require(in_channels > 0 && classes > 0 && image_size > 0 && patch_size > 0,
          "classifier {}: in_channels {}, classes {}, image_size {} and patch_size {} must be positive", name,
          in_channels, classes, image_size, patch_size);
  if (name == "mlp") {
    return std::make_shared<MlpClassifier>(in_channels * image_size * image_size, std::vector<int64_t>{256, 128},
                                           classes);
  }
  if (name == "cnn") return std::make_shared<CnnClassifier>(in_channels, classes, image_size);
  if (name == "resnet18") {
    Require(image_size >= 8, "resnet18 needs images of at least 8x8, got {}", image_size);
    return std::make_shared<ResNet18Classifier>(in_channels, classes);
  }
  if (name == "vit-tiny") {  // DeiT-Tiny: width 192, 12 blocks of 3 heads, MLP 4x, qkv bias
    VitConfig config;
    config.image_size = image_size;
    config.patch_size = patch_size;
    config.in_channels = in_channels;
    config.classes = classes;
    config.embed_dim = 192;
    config.depth = 12;
    config.heads = 3;
    config.mlp_ratio = 4;
    config.qkv_bias = true;
    return std::make_shared<VisionTransformerClassifier>(config);
  }
  Fail("unknown model '{}' (known: {})", name, fmt::join(ClassifierNames(), ", "));
}

std::vector<std::pair<std::string, QuantizableLayer*>> FindQuantLayers(torch::nn::Module& module) {
  std::vector<std::pair<std::string, QuantizableLayer*>> layers;
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    if (auto* layer = dynamic_cast<QuantizableLayer*>(item.value().get())) layers.emplace_back(item.key(), layer);
  }
  return layers;
}

void ApplyQuantConfig(ClassifierModule& model, const LayerQuantConfig& config, bool quantize_first_and_last) {
  const auto layers = model.QuantLayers();
  for (size_t i = 0; i < layers.size(); ++i) {
    const bool edge = i == 0 || i + 1 == layers.size();
    if (edge && !quantize_first_and_last) {
      LayerQuantConfig full = config;
      full.quantized = false;
      layers[i].second->SetQuantConfig(full);
    } else {
      layers[i].second->SetQuantConfig(config);
    }
  }
}

torch::Tensor ClassifierModule::PenultimateFeatures(const torch::Tensor&) {
  Fail("this classifier does not expose its penultimate features (cnn and resnet18 do)");
}

// ---- MLP ----

MlpClassifier::MlpClassifier(int64_t in_features, std::vector<int64_t> hidden, int64_t classes) {
  int64_t width = in_features;
  hidden.push_back(classes);
  for (size_t i = 0; i < hidden.size(); ++i) {
    layers_.push_back(register_module(fmt::format("fc{}", i + 1), QuantLinear(width, hidden[i])));
    width = hidden[i];
  }
}

torch::Tensor MlpClassifier::forward(torch::Tensor images) {
  torch::Tensor x = images.flatten(1);  // [N, C*H*W]
  for (size_t i = 0; i < layers_.size(); ++i) {
    x = layers_[i]->forward(x);
    if (i + 1 < layers_.size()) x = torch::relu(x);
  }
  return x;  // [N, classes]
}

// ---- CNN ----

CnnClassifier::CnnClassifier(int64_t in_channels, int64_t classes, int64_t image_size, int64_t width1,
                             int64_t width2)
    : width2_(width2) {
  Require(image_size % 4 == 0, "cnn needs an image size divisible by 4 (two 2x2 poolings), got {}", image_size);
  conv1_ = register_module("conv1", QuantConv2d(in_channels, width1, 3, 1, 1, /*bias=*/false));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(width1));
  conv2_ = register_module("conv2", QuantConv2d(width1, width1, 3, 1, 1, /*bias=*/false));
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(width1));
  conv3_ = register_module("conv3", QuantConv2d(width1, width2, 3, 1, 1, /*bias=*/false));
  bn3_ = register_module("bn3", torch::nn::BatchNorm2d(width2));
  conv4_ = register_module("conv4", QuantConv2d(width2, width2, 3, 1, 1, /*bias=*/false));
  bn4_ = register_module("bn4", torch::nn::BatchNorm2d(width2));
  dropout_conv_ = register_module("dropout_conv", torch::nn::Dropout(kConvDropout));
  const int64_t side = image_size / 4;
  fc1_ = register_module("fc1", QuantLinear(width2 * side * side, kCnnHidden, /*bias=*/false));
  bn_fc1_ = register_module("bn_fc1", torch::nn::BatchNorm1d(kCnnHidden));
  dropout_fc_ = register_module("dropout_fc", torch::nn::Dropout(kFcDropout));
  fc2_ = register_module("fc2", QuantLinear(kCnnHidden, classes));
}

torch::Tensor CnnClassifier::forward(torch::Tensor images) { return Head(FeatureMap(images)); }

torch::Tensor CnnClassifier::FeatureMap(const torch::Tensor& images) {
  torch::Tensor x = torch::relu(bn1_(conv1_(images)));  // [N, 32, S, S]
  x = torch::relu(bn2_(conv2_(x)));
  x = torch::max_pool2d(x, 2);  // [N, 32, S/2, S/2]
  x = torch::relu(bn3_(conv3_(x)));  // [N, 64, S/2, S/2]
  x = torch::relu(bn4_(conv4_(x)));
  return torch::max_pool2d(x, 2);  // [N, 64, S/4, S/4]
}

torch::Tensor CnnClassifier::Head(const torch::Tensor& features) {
  return fc2_(dropout_fc_(torch::relu(bn_fc1_(fc1_(dropout_conv_(features).flatten(1))))));  // [N, classes]
}

torch::Tensor CnnClassifier::PenultimateFeatures(const torch::Tensor& images) {
  return torch::relu(bn_fc1_(fc1_(dropout_conv_(FeatureMap(images)).flatten(1))));  // [N, 128]
}

std::vector<std::pair<std::string, std::string>> CnnClassifier::BatchNormPairs() {
  return {{"conv1", "bn1"}, {"conv2", "bn2"}, {"conv3", "bn3"}, {"conv4", "bn4"}, {"fc1", "bn_fc1"}};
}

// ---- ResNet-18 ----

BasicBlockImpl::BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride) {
  conv1_ = register_module("conv1", QuantConv2d(in_planes, planes, 3, stride, 1, /*bias=*/false));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2_ = register_module("conv2", QuantConv2d(planes, planes, 3, 1, 1, /*bias=*/false));
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(planes));
  if (stride != 1 || in_planes != planes) {
    downsample_ = register_module(
        "downsample", torch::nn::Sequential(QuantConv2d(in_planes, planes, 1, stride, 0, /*bias=*/false),
                                            torch::nn::BatchNorm2d(planes)));
  }
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor out = torch::relu(bn1_(conv1_(x)));
  out = bn2_(conv2_(out));
  const torch::Tensor shortcut = downsample_.is_empty() ? x : downsample_->forward(x);
  return torch::relu(out + shortcut);
}

namespace {

torch::nn::Sequential MakeResNetStage(int64_t in_planes, int64_t planes, int64_t stride) {
  return torch::nn::Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1));
}

}  // namespace

ResNet18Classifier::ResNet18Classifier(int64_t in_channels, int64_t classes) {
  conv1_ = register_module("conv1", QuantConv2d(in_channels, 64, 3, 1, 1, /*bias=*/false));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(64));
  layer1_ = register_module("layer1", MakeResNetStage(64, 64, 1));
  layer2_ = register_module("layer2", MakeResNetStage(64, 128, 2));
  layer3_ = register_module("layer3", MakeResNetStage(128, 256, 2));
  layer4_ = register_module("layer4", MakeResNetStage(256, 512, 2));
  fc_ = register_module("fc", QuantLinear(512, classes));
  // torchvision's initialization: kaiming_normal (fan_out, relu) for convolutions; BatchNorm weight 1, bias 0.
  for (auto& layer : FindQuantLayers(*this)) {
    if (auto* conv = dynamic_cast<QuantConv2dImpl*>(layer.second)) {
      torch::NoGradGuard no_grad;
      torch::nn::init::kaiming_normal_(conv->weight, 0, torch::kFanOut, torch::kReLU);
    }
  }
}

torch::Tensor ResNet18Classifier::forward(torch::Tensor images) { return Head(FeatureMap(images)); }

torch::Tensor ResNet18Classifier::FeatureMap(const torch::Tensor& images) {
  torch::Tensor x = torch::relu(bn1_(conv1_(images)));  // [N, 64, S, S]
  x = layer1_->forward(x);                              // [N, 64, S, S]
  x = layer2_->forward(x);                              // [N, 128, S/2, S/2]
  x = layer3_->forward(x);                              // [N, 256, S/4, S/4]
  return layer4_->forward(x);                           // [N, 512, S/8, S/8]
}

torch::Tensor ResNet18Classifier::Head(const torch::Tensor& features) {
  return fc_(torch::adaptive_avg_pool2d(features, {1, 1}).flatten(1));  // [N, 512] -> [N, classes]
}

torch::Tensor ResNet18Classifier::PenultimateFeatures(const torch::Tensor& images) {
  return torch::adaptive_avg_pool2d(FeatureMap(images), {1, 1}).flatten(1);
}

std::vector<std::pair<std::string, std::string>> ResNet18Classifier::BatchNormPairs() {
  std::vector<std::pair<std::string, std::string>> pairs{{"conv1", "bn1"}};
  for (const std::string stage : {"layer1", "layer2", "layer3", "layer4"}) {
    for (const std::string block : {".0.", ".1."}) {
      const std::string prefix = stage + block;
      pairs.emplace_back(prefix + "conv1", prefix + "bn1");
      pairs.emplace_back(prefix + "conv2", prefix + "bn2");
      // Stages 2-4 halve the size in their first block, whose shortcut is then conv1x1 + BatchNorm.
      if (stage != "layer1" && block == ".0.") pairs.emplace_back(prefix + "downsample.0", prefix + "downsample.1");
    }
  }
  return pairs;
}

}  // namespace atq
