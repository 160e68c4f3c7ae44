// timm's VisionTransformer as an atq classifier: patch embedding, class token, learned position embeddings,
// pre-norm blocks, final norm and a head on the class token, with timm's tensor names so its checkpoints load.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "models/activation_quant.h"
#include "models/classifier.h"
#include "models/quant_layers.h"

namespace atq {

// The shape of a VisionTransformer; the defaults are DeiT-Tiny's widths on 28x28 single-channel images.
struct VitConfig {
  int64_t image_size = 28;  // square images
  int64_t patch_size = 4;   // square patches; image_size must be a multiple
  int64_t in_channels = 1;
  int64_t classes = 10;
  int64_t embed_dim = 192;
  int64_t depth = 12;
  int64_t heads = 3;  // embed_dim must be a multiple
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  double layer_norm_eps = 1e-6;  // timm's ViTs, not torch's 1e-5
};

// Multi-head self-attention with the scores written out (no fused kernel) so that queries and keys pass through
// quantizers before their product, and the attention weights and values before theirs. Submodules qkv,
// query_quant, key_quant, probs_quant, value_quant, proj; the quantizers hold no tensors, so timm checkpoints
// load unchanged.
class VitAttentionImpl : public torch::nn::Module {
 public:
  VitAttentionImpl(int64_t dim, int64_t heads, bool qkv_bias);

  // x: [B, T, D] -> [B, T, D]
  torch::Tensor forward(const torch::Tensor& x);

  int64_t heads() const { return heads_; }
  int64_t head_dim() const { return head_dim_; }

  QuantLinear qkv{nullptr};   // [3D, D]: queries, keys and values, in that order, heads contiguous inside each
  ActivationQuantizer query_quant{nullptr};  // on q [B, H, T, D/H], before the scores
  ActivationQuantizer key_quant{nullptr};    // on k [B, H, T, D/H], before the scores
  ActivationQuantizer probs_quant{nullptr};  // on softmax(scores) [B, H, T, T], before the product with v
  ActivationQuantizer value_quant{nullptr};  // on v [B, H, T, D/H], before the same product
  QuantLinear proj{nullptr};  // [D, D]

 private:
  int64_t heads_;
  int64_t head_dim_;
};
TORCH_MODULE(VitAttention);

// fc1 -> exact (erf) GELU -> fc2.
class VitMlpImpl : public torch::nn::Module {
 public:
  VitMlpImpl(int64_t dim, int64_t hidden);
  // x: [B, T, D] -> [B, T, D]
  torch::Tensor forward(const torch::Tensor& x);

 private:
  QuantLinear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(VitMlp);

// Pre-norm residual block: x + attn(norm1(x)), then + mlp(norm2(x)).
class VitBlockImpl : public torch::nn::Module {
 public:
  explicit VitBlockImpl(const VitConfig& config);
  // x: [B, T, D] -> [B, T, D]
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  VitAttention attn_{nullptr};
  VitMlp mlp_{nullptr};
};
TORCH_MODULE(VitBlock);

// A p x p convolution with stride p: one embedding per patch. Submodule "proj", as timm's PatchEmbed.
class VitPatchEmbedImpl : public torch::nn::Module {
 public:
  VitPatchEmbedImpl(int64_t in_channels, int64_t embed_dim, int64_t patch_size);
  // images: [B, C, S, S] -> [B, (S/p)^2, D], patches in row-major order
  torch::Tensor forward(const torch::Tensor& images);

 private:
  QuantConv2d proj_{nullptr};
};
TORCH_MODULE(VitPatchEmbed);

// Tensors: patch_embed.proj.{weight,bias}, cls_token [1, 1, D], pos_embed [1, 1 + (S/p)^2, D] (class token
// position first), blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight,bias}, norm, head.
// No dropout (timm's defaults are all 0). 5,353,738 parameters for vit-tiny on 28x28x1 images, patch 4, 10
// classes.
class VisionTransformerClassifier : public ClassifierModule {
 public:
  explicit VisionTransformerClassifier(const VitConfig& config);

  // images: [B, C, S, S] -> logits [B, classes]
  torch::Tensor forward(torch::Tensor images) override;
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers() override;

  // Every attention module in block order, named by parameter path ("blocks.0.attn").
  std::vector<std::pair<std::string, VitAttentionImpl*>> Attentions();

  const VitConfig& config() const { return config_; }

 private:
  VitConfig config_;
  VitPatchEmbed patch_embed_{nullptr};
  torch::Tensor cls_token_;  // [1, 1, D]
  torch::Tensor pos_embed_;  // [1, 1 + P, D]
  torch::nn::ModuleList blocks_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  QuantLinear head_{nullptr};
};

}  // namespace atq
