// VisionTransformer: timm's forward pass (eval mode, no dropout) and initialization, with quantizable layers.
#include "models/vit.h"

#include <cmath>

#include <torch/torch.h>

#include "io/tensor_info.h"
#include "models/classifiers.h"
#include "util/error.h"

namespace atq {
namespace {

// timm's trunc_normal_(std=.02) cuts at +-2 in absolute terms, a hundred standard deviations out: a plain normal.
constexpr double kInitStd = 0.02;
// timm draws the class token from normal(std=1e-6), nearly zero.
constexpr double kClassTokenInitStd = 1e-6;

// timm's init_weights_vit_timm for a linear layer: weight normal(std .02), bias zero.
void InitLinearLikeTimm(QuantLinearImpl& layer) {
  torch::NoGradGuard no_grad;
  layer.weight.normal_(0, kInitStd);
  if (layer.bias.defined()) layer.bias.zero_();
}

torch::nn::LayerNorm MakeLayerNorm(const VitConfig& config) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.embed_dim}).eps(config.layer_norm_eps));
}

}  // namespace

// ---- attention ----

VitAttentionImpl::VitAttentionImpl(int64_t dim, int64_t heads, bool qkv_bias) : heads_(heads) {
  Require(heads > 0 && dim % heads == 0, "vit attention: width {} is not a multiple of {} heads", dim, heads);
  head_dim_ = dim / heads;
  qkv = register_module("qkv", QuantLinear(dim, 3 * dim, qkv_bias));
  query_quant = register_module("query_quant", ActivationQuantizer());
  key_quant = register_module("key_quant", ActivationQuantizer());
  probs_quant = register_module("probs_quant", ActivationQuantizer());
  value_quant = register_module("value_quant", ActivationQuantizer());
  proj = register_module("proj", QuantLinear(dim, dim));
  InitLinearLikeTimm(*qkv);
  InitLinearLikeTimm(*proj);
}

torch::Tensor VitAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
  // [B, T, 3D] -> [3, B, H, T, D/H]: timm's layout, queries | keys | values, each split into heads.
  const torch::Tensor qkv_heads =
      qkv->forward(x).reshape({batch, tokens, 3, heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  const torch::Tensor q = query_quant->forward(qkv_heads[0]);  // [B, H, T, D/H]
  const torch::Tensor k = key_quant->forward(qkv_heads[1]);    // [B, H, T, D/H]
  const torch::Tensor v = value_quant->forward(qkv_heads[2]);  // [B, H, T, D/H]
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;  // [B, H, T, T]
  // Softmax in float32 whatever the activations' type, as PyTorch's attention kernels do.
  const torch::Tensor weights = probs_quant->forward(scores.softmax(-1, torch::kFloat32).to(v.scalar_type()));
  const torch::Tensor mixed = torch::matmul(weights, v).transpose(1, 2).reshape({batch, tokens, dim});  // [B, T, D]
  return proj->forward(mixed);
}

// ---- MLP and block ----

VitMlpImpl::VitMlpImpl(int64_t dim, int64_t hidden) {
  fc1_ = register_module("fc1", QuantLinear(dim, hidden));
  fc2_ = register_module("fc2", QuantLinear(hidden, dim));
  InitLinearLikeTimm(*fc1_);
  InitLinearLikeTimm(*fc2_);
}

torch::Tensor VitMlpImpl::forward(const torch::Tensor& x) {
  // timm's nn.GELU: the exact erf form, not the tanh approximation.
  return fc2_->forward(torch::gelu(fc1_->forward(x), "none"));  // [B, T, hidden] inside
}

VitBlockImpl::VitBlockImpl(const VitConfig& config) {
  norm1_ = register_module("norm1", MakeLayerNorm(config));
  attn_ = register_module("attn", VitAttention(config.embed_dim, config.heads, config.qkv_bias));
  norm2_ = register_module("norm2", MakeLayerNorm(config));
  const auto hidden = static_cast<int64_t>(static_cast<double>(config.embed_dim) * config.mlp_ratio);
  mlp_ = register_module("mlp", VitMlp(config.embed_dim, hidden));
}

torch::Tensor VitBlockImpl::forward(const torch::Tensor& x) {
  const torch::Tensor attended = x + attn_->forward(norm1_->forward(x));
  return attended + mlp_->forward(norm2_->forward(attended));
}

// ---- patch embedding ----

VitPatchEmbedImpl::VitPatchEmbedImpl(int64_t in_channels, int64_t embed_dim, int64_t patch_size) {
  proj_ = register_module("proj", QuantConv2d(in_channels, embed_dim, patch_size, patch_size));
}

torch::Tensor VitPatchEmbedImpl::forward(const torch::Tensor& images) {
  return proj_->forward(images).flatten(2).transpose(1, 2);  // [B, D, S/p, S/p] -> [B, (S/p)^2, D]
}

// ---- the classifier ----

VisionTransformerClassifier::VisionTransformerClassifier(const VitConfig& config) : config_(config) {
  Require(config.image_size > 0 && config.patch_size > 0 && config.in_channels > 0 && config.classes > 0 &&
              config.embed_dim > 0 && config.depth > 0 && config.mlp_ratio > 0 && config.layer_norm_eps > 0,
          "vit: image_size {}, patch_size {}, in_channels {}, classes {}, embed_dim {}, depth {}, mlp_ratio {} and "
          "layer_norm_eps {} must be positive",
          config.image_size, config.patch_size, config.in_channels, config.classes, config.embed_dim, config.depth,
          config.mlp_ratio, config.layer_norm_eps);
  Require(config.image_size % config.patch_size == 0, "vit: image size {} is not a multiple of the patch size {}",
          config.image_size, config.patch_size);
  const int64_t side = config.image_size / config.patch_size;
  patch_embed_ = register_module("patch_embed",
                                 VitPatchEmbed(config.in_channels, config.embed_dim, config.patch_size));
  cls_token_ = register_parameter("cls_token", torch::empty({1, 1, config.embed_dim}));
  pos_embed_ = register_parameter("pos_embed", torch::empty({1, 1 + side * side, config.embed_dim}));
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.depth; ++i) blocks_->push_back(VitBlock(config));
  norm_ = register_module("norm", MakeLayerNorm(config));
  head_ = register_module("head", QuantLinear(config.embed_dim, config.classes));
  InitLinearLikeTimm(*head_);
  torch::NoGradGuard no_grad;
  cls_token_.normal_(0, kClassTokenInitStd);
  pos_embed_.normal_(0, kInitStd);
}

torch::Tensor VisionTransformerClassifier::forward(torch::Tensor images) {
  Require(images.dim() == 4 && images.size(1) == config_.in_channels && images.size(2) == config_.image_size &&
              images.size(3) == config_.image_size,
          "vit: images of shape {}, the model takes [N, {}, {}, {}]", ShapeString(images.sizes().vec()),
          config_.in_channels, config_.image_size, config_.image_size);
  torch::Tensor x = patch_embed_->forward(images);  // [B, P, D]
  x = torch::cat({cls_token_.expand({x.size(0), 1, config_.embed_dim}), x}, 1) + pos_embed_;  // [B, 1 + P, D]
  for (const auto& block : *blocks_) x = block->as<VitBlockImpl>()->forward(x);
  x = norm_->forward(x);
  return head_->forward(x.select(1, 0));  // class token [B, D] -> [B, classes]
}

std::vector<std::pair<std::string, QuantizableLayer*>> VisionTransformerClassifier::QuantLayers() {
  return FindQuantLayers(*this);
}

std::vector<std::pair<std::string, VitAttentionImpl*>> VisionTransformerClassifier::Attentions() {
  std::vector<std::pair<std::string, VitAttentionImpl*>> attentions;
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    if (auto* attention = dynamic_cast<VitAttentionImpl*>(item.value().get())) {
      attentions.emplace_back(item.key(), attention);
    }
  }
  return attentions;
}

}  // namespace atq
