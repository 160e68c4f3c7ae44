// A dual encoder for images and text (CLIP's shape, small): the image encoder is atq's CNN classifier with an
// embedding in place of its class logits, the text encoder a pre-norm transformer over caption tokens (ViT's
// blocks) mean-pooled over the real tokens; both end in a linear projection and are compared by cosine similarity
// scaled by a learned temperature. Every weight layer is a QuantLinear / QuantConv2d, so the classifier QAT
// (ATQ thresholds, STE, RPB) applies to both towers unchanged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "models/classifier.h"
#include "models/quant_layers.h"

namespace atq {

struct ImageTextConfig {
  int64_t vocab = 0;        // CaptionVocabulary::size()
  int64_t context = 32;     // caption tokens
  int64_t text_dim = 64;    // transformer width
  int64_t text_depth = 2;   // transformer blocks
  int64_t text_heads = 4;
  int64_t embed_dim = 64;   // the shared embedding space
  int64_t image_size = 28;
  int64_t in_channels = 1;
};

class TextEncoderImpl : public torch::nn::Module {
 public:
  explicit TextEncoderImpl(const ImageTextConfig& config);
  // ids [B, T] (T <= context), lengths [B] (real tokens, >= 1) -> [B, embed_dim], not normalized
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& lengths);
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers();

 private:
  torch::nn::Embedding tokens_{nullptr};
  torch::Tensor positions_;  // [context, text_dim]
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  QuantLinear proj_{nullptr};
};
TORCH_MODULE(TextEncoder);

class DualEncoderImpl : public torch::nn::Module {
 public:
  explicit DualEncoderImpl(const ImageTextConfig& config);

  // Unit-length embeddings: images [B, C, S, S] -> [B, E]; captions -> [B, E].
  torch::Tensor EncodeImages(const torch::Tensor& images);
  torch::Tensor EncodeText(const torch::Tensor& ids, const torch::Tensor& lengths);
  // exp(logit_scale), capped at 100 as CLIP caps it.
  torch::Tensor Scale() const;
  // Symmetric InfoNCE of a batch of matching (image, caption) pairs: the cross-entropy of each image against every
  // caption of the batch and of each caption against every image, averaged.
  torch::Tensor ContrastiveLoss(const torch::Tensor& images, const torch::Tensor& ids, const torch::Tensor& lengths);

  // The image tower's layers ("image.conv1", ...) then the text tower's ("text.blocks.0.attn.qkv", ...).
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers();

  const ImageTextConfig& config() const { return config_; }
  ClassifierModule& image() { return *image_; }
  TextEncoderImpl& text() { return *text_; }

 private:
  ImageTextConfig config_;
  std::shared_ptr<ClassifierModule> image_;
  TextEncoder text_{nullptr};
  torch::Tensor logit_scale_;  // log(1 / temperature), initialized to log(1 / 0.07)
};
TORCH_MODULE(DualEncoder);

nlohmann::json ImageTextConfigToJson(const ImageTextConfig& config);
ImageTextConfig ImageTextConfigFromJson(const nlohmann::json& json, const std::string& what);

// DIR/config.json ({"model": "dual-encoder", "config": ..., plus `extra`'s keys}) and DIR/model.safetensors (every
// tensor by torch name), each written atomically; loading rebuilds the model and checks every tensor.
void SaveDualEncoder(const std::string& dir, DualEncoderImpl& model, const nlohmann::json& extra);
DualEncoder LoadDualEncoder(const std::string& dir, nlohmann::json* config_json = nullptr);

}  // namespace atq
