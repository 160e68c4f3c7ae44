#include "models/image_text.h"

#include <cmath>
#include <filesystem>

#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/strict_json.h"
#include "models/classifier_checkpoint.h"
#include "models/classifiers.h"
#include "models/vit.h"
#include "util/error.h"

namespace atq {

TextEncoderImpl::TextEncoderImpl(const ImageTextConfig& config) {
  Require(config.vocab > 2 && config.context > 0 && config.text_depth > 0 && config.text_dim % config.text_heads == 0,
          "text encoder: vocabulary {}, context {}, depth {}, width {} over {} heads", config.vocab, config.context,
          config.text_depth, config.text_dim, config.text_heads);
  tokens_ = register_module("tokens", torch::nn::Embedding(config.vocab, config.text_dim));
  positions_ = register_parameter("positions", torch::randn({config.context, config.text_dim}) * 0.02);
  VitConfig block;
  block.embed_dim = config.text_dim;
  block.heads = config.text_heads;
  block.layer_norm_eps = 1e-5;
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.text_depth; ++i) blocks_->push_back(VitBlock(block));
  norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.text_dim})));
  proj_ = register_module("proj", QuantLinear(config.text_dim, config.embed_dim, /*bias=*/false));
}

torch::Tensor TextEncoderImpl::forward(const torch::Tensor& ids, const torch::Tensor& lengths) {
  Require(ids.dim() == 2 && ids.size(1) <= positions_.size(0), "text encoder: ids must be [B, T <= {}]",
          positions_.size(0));
  const int64_t length = ids.size(1);
  torch::Tensor x = tokens_->forward(ids) + positions_.slice(0, 0, length).unsqueeze(0);
  for (const auto& block : *blocks_) x = block->as<VitBlockImpl>()->forward(x);
  x = norm_->forward(x);
  // The mean over each caption's real tokens (padding attends and is attended to, but is not pooled).
  const torch::Tensor mask =
      (torch::arange(length, ids.options()).unsqueeze(0) < lengths.unsqueeze(1)).to(x.dtype()).unsqueeze(2);
  const torch::Tensor pooled = (x * mask).sum(1) / mask.sum(1).clamp_min(1.0);
  return proj_->forward(pooled);
}

std::vector<std::pair<std::string, QuantizableLayer*>> TextEncoderImpl::QuantLayers() {
  std::vector<std::pair<std::string, QuantizableLayer*>> layers = FindQuantLayers(*blocks_);
  for (auto& [name, layer] : layers) name = "blocks." + name;
  layers.emplace_back("proj", proj_.get());
  return layers;
}

DualEncoderImpl::DualEncoderImpl(const ImageTextConfig& config) : config_(config) {
  image_ = register_module("image", MakeClassifier("cnn", config.in_channels, config.embed_dim, config.image_size));
  text_ = register_module("text", TextEncoder(config));
  logit_scale_ = register_parameter("logit_scale", torch::full({1}, std::log(1.0 / 0.07)));
}

torch::Tensor DualEncoderImpl::EncodeImages(const torch::Tensor& images) {
  return torch::nn::functional::normalize(image_->forward(images),
                                          torch::nn::functional::NormalizeFuncOptions().dim(1));
}

torch::Tensor DualEncoderImpl::EncodeText(const torch::Tensor& ids, const torch::Tensor& lengths) {
  return torch::nn::functional::normalize(text_->forward(ids, lengths),
                                          torch::nn::functional::NormalizeFuncOptions().dim(1));
}

torch::Tensor DualEncoderImpl::Scale() const { return logit_scale_.exp().clamp_max(100.0); }

torch::Tensor DualEncoderImpl::ContrastiveLoss(const torch::Tensor& images, const torch::Tensor& ids,
                                               const torch::Tensor& lengths) {
  const torch::Tensor logits = Scale() * EncodeImages(images).matmul(EncodeText(ids, lengths).t());  // [B, B]
  const torch::Tensor targets = torch::arange(logits.size(0), torch::kLong);
  return 0.5 * (torch::nn::functional::cross_entropy(logits, targets) +
                torch::nn::functional::cross_entropy(logits.t(), targets));
}

std::vector<std::pair<std::string, QuantizableLayer*>> DualEncoderImpl::QuantLayers() {
  std::vector<std::pair<std::string, QuantizableLayer*>> layers;
  for (auto& [name, layer] : image_->QuantLayers()) layers.emplace_back("image." + name, layer);
  for (auto& [name, layer] : text_->QuantLayers()) layers.emplace_back("text." + name, layer);
  return layers;
}

nlohmann::json ImageTextConfigToJson(const ImageTextConfig& c) {
  return {{"vocab", c.vocab},         {"context", c.context},       {"text_dim", c.text_dim},
          {"text_depth", c.text_depth}, {"text_heads", c.text_heads}, {"embed_dim", c.embed_dim},
          {"image_size", c.image_size}, {"in_channels", c.in_channels}};
}

ImageTextConfig ImageTextConfigFromJson(const nlohmann::json& json, const std::string& what) {
  ImageTextConfig c;
  try {
    c.vocab = json.at("vocab").get<int64_t>();
    c.context = json.at("context").get<int64_t>();
    c.text_dim = json.at("text_dim").get<int64_t>();
    c.text_depth = json.at("text_depth").get<int64_t>();
    c.text_heads = json.at("text_heads").get<int64_t>();
    c.embed_dim = json.at("embed_dim").get<int64_t>();
    c.image_size = json.at("image_size").get<int64_t>();
    c.in_channels = json.at("in_channels").get<int64_t>();
  } catch (const nlohmann::json::exception& error) {
    Fail("{}: bad dual-encoder config: {}", what, error.what());
  }
  // Bounds before any allocation sized by them (a hostile file must not ask for terabytes).
  Require(c.vocab > 2 && c.vocab <= 1000000 && c.context > 0 && c.context <= 4096 && c.text_dim > 0 &&
              c.text_dim <= 8192 && c.text_depth > 0 && c.text_depth <= 64 && c.text_heads > 0 &&
              c.text_dim % c.text_heads == 0 && c.embed_dim > 0 && c.embed_dim <= 8192 && c.image_size >= 4 &&
              c.image_size <= kMaxImageSize && c.image_size % 4 == 0 && c.in_channels > 0 &&
              c.in_channels <= kMaxInChannels,
          "{}: dual-encoder sizes out of range: {}", what, ImageTextConfigToJson(c).dump());
  return c;
}

void SaveDualEncoder(const std::string& dir, DualEncoderImpl& model, const nlohmann::json& extra) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  Require(!error, "{}: cannot create folder: {}", dir, error.message());
  nlohmann::json config = {{"model", "dual-encoder"}, {"config", ImageTextConfigToJson(model.config())}};
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) config[key] = value;
  }
  const std::filesystem::path folder(dir);
  SaveModuleTensors(model, (folder / "model.safetensors").string(), {{"format", "pt"}, {"atq_model", "dual-encoder"}});
  WriteFileAtomically((folder / "config.json").string(), config.dump(2) + "\n");
}

DualEncoder LoadDualEncoder(const std::string& dir, nlohmann::json* config_json) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  const nlohmann::json json = ReadStrictJsonFile(config_path);
  Require(json.is_object() && json.value("model", std::string()) == "dual-encoder" && json.contains("config"),
          "{}: not a dual-encoder checkpoint (\"model\": \"dual-encoder\" missing)", config_path);
  DualEncoder model(ImageTextConfigFromJson(json.at("config"), config_path));
  LoadModuleTensors(*model, (std::filesystem::path(dir) / "model.safetensors").string());
  model->eval();
  if (config_json != nullptr) *config_json = json;
  return model;
}

}  // namespace atq
