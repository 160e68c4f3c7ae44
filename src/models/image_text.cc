#include "models/image_text.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>
#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/strict_json.h"
#include "models/classifier_checkpoint.h"
#include "models/classifiers.h"
#include "models/packed_module.h"
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

torch::Tensor TextEncoderImpl::States(const torch::Tensor& ids) {
  Require(ids.dim() == 2 && ids.size(1) <= positions_.size(0), "text encoder: ids must be [B, T <= {}]",
          positions_.size(0));
  torch::Tensor x = tokens_->forward(ids) + positions_.slice(0, 0, ids.size(1)).unsqueeze(0);
  for (const auto& block : *blocks_) x = block->as<VitBlockImpl>()->forward(x);
  return norm_->forward(x);
}

// Padding attends and is attended to in the text blocks, but is never pooled.
torch::Tensor MeanOverTokens(const torch::Tensor& states, const torch::Tensor& lengths) {
  const torch::Tensor mask = (torch::arange(states.size(1), lengths.options()).unsqueeze(0) < lengths.unsqueeze(1))
                                 .to(states.dtype())
                                 .unsqueeze(2);
  return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0);
}

CaptionBatch EncodeCaptions(const std::vector<std::string>& texts, const CaptionVocabulary& vocabulary,
                            int64_t context) {
  CaptionBatch out{torch::empty({static_cast<int64_t>(texts.size()), context}, torch::kLong),
                   torch::empty({static_cast<int64_t>(texts.size())}, torch::kLong)};
  for (size_t i = 0; i < texts.size(); ++i) {
    int64_t length = 0;
    const std::vector<int64_t> ids = vocabulary.Encode(texts[i], context, &length);
    out.ids[static_cast<int64_t>(i)].copy_(torch::tensor(ids, torch::kLong));
    out.lengths[static_cast<int64_t>(i)] = length;
  }
  return out;
}

namespace {

torch::Tensor Normalized(const torch::Tensor& x) {
  return torch::nn::functional::normalize(x, torch::nn::functional::NormalizeFuncOptions().dim(1));
}

std::vector<std::pair<std::string, QuantizableLayer*>> Prefixed(
    const std::string& prefix, std::vector<std::pair<std::string, QuantizableLayer*>> layers) {
  for (auto& [name, layer] : layers) name = prefix + name;
  return layers;
}

}  // namespace

torch::Tensor TextEncoderImpl::Embed(const torch::Tensor& states, const torch::Tensor& lengths) {
  return proj_->forward(MeanOverTokens(states, lengths));
}

std::vector<std::pair<std::string, QuantizableLayer*>> TextEncoderImpl::QuantLayers() {
  std::vector<std::pair<std::string, QuantizableLayer*>> layers = StateLayers();
  layers.emplace_back("proj", proj_.get());
  return layers;
}

std::vector<std::pair<std::string, QuantizableLayer*>> TextEncoderImpl::StateLayers() {
  return Prefixed("blocks.", FindQuantLayers(*blocks_));
}

// ---- fusion ----

CrossAttentionImpl::CrossAttentionImpl(int64_t dim, int64_t heads) : heads_(heads) {
  Require(heads > 0 && dim % heads == 0, "cross-attention: width {} over {} heads", dim, heads);
  query_ = register_module("query", QuantLinear(dim, dim));
  key_value_ = register_module("key_value", QuantLinear(dim, 2 * dim));
  proj_ = register_module("proj", QuantLinear(dim, dim));
}

torch::Tensor CrossAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const int64_t batch = x.size(0), tokens = x.size(1), sources = context.size(1), dim = x.size(2);
  const int64_t head_dim = dim / heads_;
  const torch::Tensor q = query_->forward(x).reshape({batch, tokens, heads_, head_dim}).transpose(1, 2);
  const torch::Tensor kv = key_value_->forward(context).reshape({batch, sources, 2, heads_, head_dim}).permute(
      {2, 0, 3, 1, 4});  // [2, B, H, S, D/H]
  const torch::Tensor scores = torch::matmul(q, kv[0].transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim));
  const torch::Tensor mixed = torch::matmul(scores.softmax(-1), kv[1]).transpose(1, 2).reshape({batch, tokens, dim});
  return proj_->forward(mixed);
}

FusionBlockImpl::FusionBlockImpl(int64_t dim, int64_t heads) {
  norm_query_ = register_module("norm_query", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  norm_context_ = register_module("norm_context", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  attn_ = register_module("attn", CrossAttention(dim, heads));
  norm2_ = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  mlp_ = register_module("mlp", VitMlp(dim, 4 * dim));
}

torch::Tensor FusionBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const torch::Tensor attended = x + attn_->forward(norm_query_->forward(x), norm_context_->forward(context));
  return attended + mlp_->forward(norm2_->forward(attended));
}

FusionImpl::FusionImpl(const ImageTextConfig& config, int64_t image_channels, int64_t image_positions) {
  Require(config.fusion_depth > 0, "fusion: depth must be positive, got {}", config.fusion_depth);
  image_proj_ = register_module("image_proj", QuantLinear(image_channels, config.text_dim));
  positions_ = register_parameter("positions", torch::randn({image_positions, config.text_dim}) * 0.02);
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.fusion_depth; ++i) blocks_->push_back(FusionBlock(config.text_dim, config.text_heads));
  norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.text_dim})));
  head_ = register_module("head", QuantLinear(config.text_dim, 2));
}

torch::Tensor FusionImpl::forward(const torch::Tensor& image_features, const torch::Tensor& text_states,
                                  const torch::Tensor& lengths) {
  Require(image_features.dim() == 4 && image_features.size(2) * image_features.size(3) == positions_.size(0),
          "fusion: image features must be [B, C, h, w] with h * w = {}", positions_.size(0));
  // [B, C, h, w] -> [B, h*w, C] -> [B, h*w, D]
  const torch::Tensor image = image_proj_->forward(image_features.flatten(2).transpose(1, 2)) + positions_;
  torch::Tensor x = text_states;
  for (const auto& block : *blocks_) x = block->as<FusionBlockImpl>()->forward(x, image);
  return head_->forward(MeanOverTokens(norm_->forward(x), lengths));
}

std::vector<std::pair<std::string, QuantizableLayer*>> FusionImpl::QuantLayers() {
  std::vector<std::pair<std::string, QuantizableLayer*>> layers = {{"image_proj", image_proj_.get()}};
  for (auto& entry : Prefixed("blocks.", FindQuantLayers(*blocks_))) layers.push_back(entry);
  layers.emplace_back("head", head_.get());
  return layers;
}

// ---- the model ----

ImageTextModelImpl::ImageTextModelImpl(const ImageTextConfig& config) : config_(config) {
  image_ = register_module("image", std::make_shared<CnnClassifier>(config.in_channels, config.embed_dim,
                                                                   config.image_size));
  text_ = register_module("text", TextEncoder(config));
  const int64_t side = config.image_size / 4;  // the CNN's two 2x2 poolings
  fusion_ = register_module("fusion", Fusion(config, image_->feature_channels(), side * side));
  logit_scale_ = register_parameter("logit_scale", torch::full({1}, std::log(1.0 / 0.07)));
}

torch::Tensor ImageTextModelImpl::EncodeImages(const torch::Tensor& images) {
  return Normalized(image_->forward(images));
}

torch::Tensor ImageTextModelImpl::EncodeText(const CaptionBatch& captions) {
  return Normalized(text_->Embed(text_->States(captions.ids), captions.lengths));
}

torch::Tensor ImageTextModelImpl::Match(const torch::Tensor& images, const CaptionBatch& captions) {
  return fusion_->forward(image_->FeatureMap(images), text_->States(captions.ids), captions.lengths);
}

torch::Tensor ImageTextModelImpl::Scale() const { return logit_scale_.exp().clamp_max(100.0); }

ImageTextLogits ImageTextModelImpl::Logits(const torch::Tensor& images, const CaptionBatch& captions,
                                           const CaptionBatch& negatives) {
  Require(captions.ids.size(0) == images.size(0) && negatives.ids.size(0) == images.size(0),
          "image-text: {} images, {} captions, {} negatives", images.size(0), captions.ids.size(0),
          negatives.ids.size(0));
  const torch::Tensor features = image_->FeatureMap(images);
  const torch::Tensor image_embeddings = Normalized(image_->Head(features));
  // The captions and their negatives through the text tower together (one pass, padded to the same length).
  const torch::Tensor states = text_->States(torch::cat({captions.ids, negatives.ids}));
  const torch::Tensor lengths = torch::cat({captions.lengths, negatives.lengths});
  const int64_t batch = images.size(0);
  const torch::Tensor text_embeddings = Normalized(text_->Embed(states.slice(0, 0, batch), captions.lengths));
  ImageTextLogits logits;
  logits.similarity = Scale() * image_embeddings.matmul(text_embeddings.t());
  logits.match = fusion_->forward(torch::cat({features, features}), states, lengths);
  return logits;
}

std::vector<std::pair<std::string, QuantizableLayer*>> ImageTextModelImpl::QuantLayers() {
  std::vector<std::pair<std::string, QuantizableLayer*>> layers = Prefixed("image.", image_->QuantLayers());
  for (auto& entry : Prefixed("text.", text_->QuantLayers())) layers.push_back(entry);
  for (auto& entry : Prefixed("fusion.", fusion_->QuantLayers())) layers.push_back(entry);
  return layers;
}

torch::Tensor MatchLabels(int64_t batch) {
  return torch::cat({torch::ones({batch}, torch::kLong), torch::zeros({batch}, torch::kLong)});
}

torch::Tensor ImageTextLoss(const ImageTextLogits& logits, double match_weight) {
  const torch::Tensor targets = torch::arange(logits.similarity.size(0), torch::kLong);
  torch::Tensor loss = 0.5 * (torch::nn::functional::cross_entropy(logits.similarity, targets) +
                              torch::nn::functional::cross_entropy(logits.similarity.t(), targets));
  if (match_weight > 0) {
    loss = loss + match_weight * torch::nn::functional::cross_entropy(logits.match,
                                                                      MatchLabels(logits.similarity.size(0)));
  }
  return loss;
}

nlohmann::json ImageTextConfigToJson(const ImageTextConfig& c) {
  return {{"vocab", c.vocab},           {"context", c.context},       {"text_dim", c.text_dim},
          {"text_depth", c.text_depth}, {"text_heads", c.text_heads}, {"embed_dim", c.embed_dim},
          {"fusion_depth", c.fusion_depth}, {"image_size", c.image_size}, {"in_channels", c.in_channels}};
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
    c.fusion_depth = json.at("fusion_depth").get<int64_t>();
    c.image_size = json.at("image_size").get<int64_t>();
    c.in_channels = json.at("in_channels").get<int64_t>();
  } catch (const nlohmann::json::exception& error) {
    Fail("{}: bad image-text config: {}", what, error.what());
  }
  // Bounds before any allocation sized by them (a hostile file must not ask for terabytes).
  Require(c.vocab > 2 && c.vocab <= 1000000 && c.context > 0 && c.context <= 4096 && c.text_dim > 0 &&
              c.text_dim <= 8192 && c.text_depth > 0 && c.text_depth <= 64 && c.text_heads > 0 &&
              c.text_dim % c.text_heads == 0 && c.embed_dim > 0 && c.embed_dim <= 8192 && c.fusion_depth > 0 &&
              c.fusion_depth <= 64 && c.image_size >= 4 && c.image_size <= kMaxImageSize && c.image_size % 4 == 0 &&
              c.in_channels > 0 && c.in_channels <= kMaxInChannels,
          "{}: image-text sizes out of range: {}", what, ImageTextConfigToJson(c).dump());
  return c;
}

namespace {

constexpr const char* kPackedFormat = "atq-packed-image-text/1";

// What config.json holds: the model kind, its sizes, each layer's quantization.
nlohmann::json CheckpointJson(ImageTextModelImpl& model) {
  return {{"model", "image-text"}, {"config", ImageTextConfigToJson(model.config())},
          {"layers", LayerConfigsToJson(model.QuantLayers())}};
}

// The model a config.json (or a packed file's atq.config) describes, untrained.
ImageTextModel ModelFromJson(const nlohmann::json& json, const std::string& what) {
  Require(json.is_object() && json.value("model", std::string()) == "image-text" && json.contains("config"),
          "{}: not an image-text checkpoint (\"model\": \"image-text\" missing)", what);
  return ImageTextModel(ImageTextConfigFromJson(json.at("config"), what));
}

}  // namespace

void SaveImageTextModel(const std::string& dir, ImageTextModelImpl& model, const nlohmann::json& extra) {
  SaveModuleFolder(dir, model, CheckpointJson(model), extra);
}

ImageTextModel LoadImageTextModel(const std::string& dir, nlohmann::json* config_json) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  const nlohmann::json json = ReadStrictJsonFile(config_path);
  ImageTextModel model = ModelFromJson(json, config_path);
  LoadModuleTensors(*model, (std::filesystem::path(dir) / "model.safetensors").string());
  if (json.contains("layers")) ApplyLayerConfigsJson(json.at("layers"), model->QuantLayers(), config_path);
  model->eval();
  if (config_json != nullptr) *config_json = json;
  return model;
}

int64_t ExportPackedImageText(ImageTextModelImpl& model, const nlohmann::json& extra, QuantType type,
                              const std::string& path) {
  return WritePackedModel(model, model.QuantLayers(), type, kPackedFormat, CheckpointJson(model), extra, path);
}

bool IsPackedImageText(const std::string& path) { return PackedFormatOf(path) == kPackedFormat; }

ImageTextModel LoadImageTextAny(const std::string& path, PackedRun run, nlohmann::json* config_json) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) return LoadImageTextModel(path, config_json);
  return LoadPackedModel<ImageTextModel>(path, kPackedFormat, run, ModelFromJson, config_json);
}

}  // namespace atq
