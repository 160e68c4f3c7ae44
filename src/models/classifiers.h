// The image classifiers atq trains and quantizes (MLP, small CNN, ResNet-18 for 28x28 inputs, ViT in models/vit.h).
// Every convolution and linear layer is a QuantConv2d / QuantLinear, full precision until configured.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include "models/classifier.h"
#include "models/quant_layers.h"

namespace atq {

// Bounds on a classifier's geometry, shared by the command line (--image-size, --channels, --classes) and
// config files: beyond them a model would be sized by a typo or a hostile file, not by its weights.
inline constexpr int64_t kMaxImageSize = 4096;
inline constexpr int64_t kMaxInChannels = 64;
inline constexpr int64_t kMaxClasses = 1000000;

// The names MakeClassifier accepts.
const std::vector<std::string>& ClassifierNames();

// "mlp", "cnn", "resnet18" or "vit-tiny" for images [N, in_channels, image_size, image_size]; throws atq::Error
// for another name (the message lists the names) or non-positive sizes. image_size matters to the MLP and the
// CNN's classifier head (the CNN needs a multiple of 4) and to the ViT's position embeddings (a multiple of
// patch_size, which only the ViT uses); ResNet-18 pools globally and takes any size >= 8.
std::shared_ptr<ClassifierModule> MakeClassifier(const std::string& name, int64_t in_channels, int64_t classes,
                                                 int64_t image_size = 28, int64_t patch_size = 4);

// Every QuantizableLayer below `module`, in registration order, named by parameter path ("layer1.0.conv1").
std::vector<std::pair<std::string, QuantizableLayer*>> FindQuantLayers(torch::nn::Module& module);

// Sets `config` on every weight layer of `model`. The first and last entries of QuantLayers() are the input
// layer (sees raw pixels) and the output layer (makes the logits); with quantize_first_and_last = false, the
// recommended default, they stay full precision, as in TWN, TTQ and most ternary work: they hold a small share
// of the weights (cnn 0.3%, resnet18 0.05%) and quantizing them costs the most accuracy per byte saved.
void ApplyQuantConfig(ClassifierModule& model, const LayerQuantConfig& config, bool quantize_first_and_last = false);

// in -> 256 -> 128 -> classes with ReLU (hidden sizes configurable). Layers fc1, fc2, ..., fcN.
class MlpClassifier : public ClassifierModule {
 public:
  MlpClassifier(int64_t in_features, std::vector<int64_t> hidden, int64_t classes);
  // images: [N, C, H, W] with C*H*W = in_features -> logits [N, classes]
  torch::Tensor forward(torch::Tensor images) override;
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers() override { return FindQuantLayers(*this); }

 private:
  std::vector<QuantLinear> layers_;
};

// VGG-style: [conv3x3 W1, BN, ReLU] x2, maxpool 2, [conv3x3 W2, BN, ReLU] x2, maxpool 2, dropout 0.25,
// fc W2*(S/4)^2 -> 128, BN, ReLU, dropout 0.5, fc 128 -> classes, with W1 = 32, W2 = 64 for "cnn".
// Convolutions carry no bias (BatchNorm follows). Layers conv1..conv4, fc1, fc2; BatchNorms bn1..bn4, bn_fc1.
class CnnClassifier : public ClassifierModule {
 public:
  CnnClassifier(int64_t in_channels, int64_t classes, int64_t image_size, int64_t width1 = 32, int64_t width2 = 64);
  torch::Tensor forward(torch::Tensor images) override;
  // forward = Head(FeatureMap(images)): the convolutions' output [N, width2, S/4, S/4], then dropout, fc1 and fc2
  // (a model that needs the spatial features too, such as the image-text fusion, runs the halves itself).
  torch::Tensor FeatureMap(const torch::Tensor& images);
  torch::Tensor Head(const torch::Tensor& features);
  int64_t feature_channels() const { return width2_; }
  torch::Tensor PenultimateFeatures(const torch::Tensor& images) override;  // fc1's output after BN and ReLU
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers() override { return FindQuantLayers(*this); }
  std::vector<std::pair<std::string, std::string>> BatchNormPairs() override;

 private:
  int64_t width2_;
  QuantConv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr}, conv4_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr}, bn4_{nullptr};
  QuantLinear fc1_{nullptr}, fc2_{nullptr};
  torch::nn::BatchNorm1d bn_fc1_{nullptr};
  torch::nn::Dropout dropout_conv_{nullptr}, dropout_fc_{nullptr};
};

// torchvision's BasicBlock: conv3x3(stride) BN ReLU conv3x3 BN, plus the identity or downsample (conv1x1(stride),
// BN) when the shape changes; ReLU after the sum.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride);
  // x: [N, in_planes, H, W] -> [N, planes, H / stride, W / stride]
  torch::Tensor forward(const torch::Tensor& x);

 private:
  QuantConv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential downsample_{nullptr};  // empty holder when the identity fits
};
TORCH_MODULE(BasicBlock);

// ResNet-18 for small images: 3x3 stride-1 stem without maxpool, then torchvision's layer1..layer4 (64, 128,
// 256, 512 planes, two BasicBlocks each), global average pooling and fc. Tensor names are torchvision's (conv1,
// bn1, layer1.0.conv1, layer2.0.downsample.0, ..., fc), so its checkpoints load by name. 11,172,810 parameters
// for 1 channel and 10 classes.
class ResNet18Classifier : public ClassifierModule {
 public:
  ResNet18Classifier(int64_t in_channels, int64_t classes);
  torch::Tensor forward(torch::Tensor images) override;
  // forward = Head(FeatureMap(images)): layer4's output [N, 512, S/8, S/8], then global average pooling and fc
  // (the pooled features are the penultimate layer that Frechet distances are measured in).
  torch::Tensor FeatureMap(const torch::Tensor& images);
  torch::Tensor Head(const torch::Tensor& features);
  torch::Tensor PenultimateFeatures(const torch::Tensor& images) override;  // the pooled layer4 output [N, 512]
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers() override { return FindQuantLayers(*this); }
  std::vector<std::pair<std::string, std::string>> BatchNormPairs() override;

 private:
  QuantConv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  torch::nn::Sequential layer1_{nullptr}, layer2_{nullptr}, layer3_{nullptr}, layer4_{nullptr};
  QuantLinear fc_{nullptr};
};

}  // namespace atq
