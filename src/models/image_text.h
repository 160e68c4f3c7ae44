// An image-text model in the shape of ALBEF / BLIP, small: an image encoder (atq's CNN classifier with an
// embedding in place of its class logits), a text encoder (a pre-norm transformer over caption tokens, ViT's
// blocks), and a fusion module.
//  - As a dual encoder, each tower ends in a linear projection to a shared space; images and captions are
//    compared by cosine similarity scaled by a learned temperature (zero-shot classification, retrieval).
//  - The fusion module decides whether a caption matches an image: the caption's token states attend to the
//    image's feature map (cross-attention, one key per position of the last convolution), and a linear head on
//    the pooled result gives two logits (no match, match). It needs both modalities: the towers' embeddings
//    alone do not enter it.
// Every weight layer is a QuantLinear / QuantConv2d, so the classifier QAT (ATQ thresholds, STE, RPB) and the
// packed kernels apply to all three parts unchanged.
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

#include "data/captions.h"
#include "models/classifier.h"
#include "models/classifiers.h"
#include "models/packed_product.h"
#include "formats/quant_type.h"
#include "models/quant_layers.h"
#include "models/vit.h"

namespace atq {

struct ImageTextConfig {
  int64_t vocab = 0;        // CaptionVocabulary::size()
  int64_t context = 32;     // caption tokens
  int64_t text_dim = 64;    // transformer width (also the fusion module's)
  int64_t text_depth = 2;   // transformer blocks
  int64_t text_heads = 4;
  int64_t embed_dim = 64;   // the shared embedding space
  int64_t fusion_depth = 1; // cross-attention blocks
  int64_t image_size = 28;
  int64_t in_channels = 1;
};

class TextEncoderImpl : public torch::nn::Module {
 public:
  explicit TextEncoderImpl(const ImageTextConfig& config);
  // ids [B, T] (T <= context), lengths [B] (real tokens, >= 1) -> token states [B, T, text_dim] after the final norm
  torch::Tensor States(const torch::Tensor& ids);
  // The projection of the mean state over each caption's real tokens -> [B, embed_dim], not normalized.
  torch::Tensor Embed(const torch::Tensor& states, const torch::Tensor& lengths);
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers();
  // The layers States runs (all but the embedding projection): what a text-to-image model reads captions with.
  std::vector<std::pair<std::string, QuantizableLayer*>> StateLayers();
  torch::nn::ModuleList& blocks() { return blocks_; }

 private:
  torch::nn::Embedding tokens_{nullptr};
  torch::Tensor positions_;  // [context, text_dim]
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  QuantLinear proj_{nullptr};
};
TORCH_MODULE(TextEncoder);

// Multi-head attention of queries x [B, T, D] over a context [B, S, D] (no mask: every context position is real).
class CrossAttentionImpl : public torch::nn::Module {
 public:
  CrossAttentionImpl(int64_t dim, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

 private:
  int64_t heads_;
  QuantLinear query_{nullptr}, key_value_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(CrossAttention);

// Pre-norm residual block: x + cross(norm_query(x), norm_context(context)), then x + mlp(norm2(x)).
class FusionBlockImpl : public torch::nn::Module {
 public:
  FusionBlockImpl(int64_t dim, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

 private:
  torch::nn::LayerNorm norm_query_{nullptr}, norm_context_{nullptr}, norm2_{nullptr};
  CrossAttention attn_{nullptr};
  VitMlp mlp_{nullptr};
};
TORCH_MODULE(FusionBlock);

// The fusion module: image features [B, C, h, w] become h*w tokens (a linear map to the text width plus a learned
// position each); the caption states pass the fusion blocks; their mean over the real tokens, normalized, goes to
// the head [2, D].
class FusionImpl : public torch::nn::Module {
 public:
  FusionImpl(const ImageTextConfig& config, int64_t image_channels, int64_t image_positions);
  // -> [B, 2] logits (no match, match)
  torch::Tensor forward(const torch::Tensor& image_features, const torch::Tensor& text_states,
                        const torch::Tensor& lengths);
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers();

 private:
  QuantLinear image_proj_{nullptr};
  torch::Tensor positions_;  // [h * w, text_dim]
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  QuantLinear head_{nullptr};
};
TORCH_MODULE(Fusion);

// Tokenized captions: ids [N, context] (padded), lengths [N].
struct CaptionBatch {
  torch::Tensor ids;
  torch::Tensor lengths;
};

// Captions as the text tower's ids (padded to `context`) and lengths.
CaptionBatch EncodeCaptions(const std::vector<std::string>& texts, const CaptionVocabulary& vocabulary,
                            int64_t context);

// The mean of states [B, T, D] over each row's first lengths[b] positions -> [B, D].
torch::Tensor MeanOverTokens(const torch::Tensor& states, const torch::Tensor& lengths);

// What one training step compares, for a batch of B images with a matching caption each and a non-matching one.
struct ImageTextLogits {
  torch::Tensor similarity;  // [B, B]: scale * cos(image i, caption j)
  torch::Tensor match;       // [2B, 2]: (image i, caption i) for i < B, then (image i, negative i)
};

class ImageTextModelImpl : public torch::nn::Module {
 public:
  explicit ImageTextModelImpl(const ImageTextConfig& config);

  // Unit-length embeddings: images [B, C, S, S] -> [B, E]; captions -> [B, E].
  torch::Tensor EncodeImages(const torch::Tensor& images);
  torch::Tensor EncodeText(const CaptionBatch& captions);
  // Match logits [B, 2] of image i with caption i.
  torch::Tensor Match(const torch::Tensor& images, const CaptionBatch& captions);
  // exp(logit_scale), capped at 100 as CLIP caps it.
  torch::Tensor Scale() const;
  // Both heads on one batch, each tower run once per input.
  ImageTextLogits Logits(const torch::Tensor& images, const CaptionBatch& captions, const CaptionBatch& negatives);

  // The image tower's layers ("image.conv1", ...), the text tower's ("text.blocks.0.attn.qkv", ...), then the
  // fusion module's ("fusion.image_proj", ...).
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers();

  const ImageTextConfig& config() const { return config_; }
  CnnClassifier& image() { return *image_; }
  TextEncoderImpl& text() { return *text_; }

 private:
  ImageTextConfig config_;
  std::shared_ptr<CnnClassifier> image_;
  TextEncoder text_{nullptr};
  Fusion fusion_{nullptr};
  torch::Tensor logit_scale_;  // log(1 / temperature), initialized to log(1 / 0.07)
};
TORCH_MODULE(ImageTextModel);

// Symmetric InfoNCE of the similarity logits (each image against every caption of the batch and each caption
// against every image, cross-entropy with the diagonal as targets, averaged) plus match_weight times the match
// cross-entropy (labels: B ones then B zeros).
torch::Tensor ImageTextLoss(const ImageTextLogits& logits, double match_weight);
// The match labels of ImageTextLogits::match for B images.
torch::Tensor MatchLabels(int64_t batch);

nlohmann::json ImageTextConfigToJson(const ImageTextConfig& config);
ImageTextConfig ImageTextConfigFromJson(const nlohmann::json& json, const std::string& what);

// DIR/config.json ({"model": "image-text", "config": ..., "layers": each quantizable layer's configuration, plus
// `extra`'s keys}) and DIR/model.safetensors (every tensor by torch name), each written atomically; loading
// rebuilds the model, checks every tensor and restores the layers' quantization.
void SaveImageTextModel(const std::string& dir, ImageTextModelImpl& model, const nlohmann::json& extra);
ImageTextModel LoadImageTextModel(const std::string& dir, nlohmann::json* config_json = nullptr);

// The model as one packed file (models/packed_module.h, format "atq-packed-image-text/1", metadata "atq.config" =
// what config.json would hold): its ternary layers as `type` (t2 or t1.6), the rest float32. Returns the bytes.
int64_t ExportPackedImageText(ImageTextModelImpl& model, const nlohmann::json& extra, QuantType type,
                              const std::string& path);
bool IsPackedImageText(const std::string& path);
// A checkpoint folder (SaveImageTextModel) or a packed file, its ternary layers running as `run` says.
ImageTextModel LoadImageTextAny(const std::string& path, PackedRun run, nlohmann::json* config_json = nullptr);

}  // namespace atq
