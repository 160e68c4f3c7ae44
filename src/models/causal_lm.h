// The interface every causal language model in atq implements (GPT-2, Llama), its key/value cache, and the
// attention both share. Parameter names are Hugging Face's, so checkpoints load by name; every linear layer
// is an LmLinear with weight [out, in] (GPT-2's Conv1D [in, out] is transposed on load and save).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "kernels/packed_matrix.h"
#include "models/lm_config.h"

namespace atq {

// Keys and values of every layer for the positions seen so far.
struct KvCache {
  std::vector<torch::Tensor> keys;    // per layer [B, kv_heads, S, head_dim]
  std::vector<torch::Tensor> values;  // per layer [B, kv_heads, S, head_dim]
  int64_t length = 0;                 // S, positions cached

  // Appends one layer's new keys/values ([B, kv_heads, T, head_dim]) and returns the full ones.
  std::pair<torch::Tensor, torch::Tensor> Append(size_t layer, const torch::Tensor& new_keys,
                                                 const torch::Tensor& new_values);
};

class CausalLmImpl : public torch::nn::Module {
 public:
  explicit CausalLmImpl(const LmConfig& config) : config_(config) {}
  const LmConfig& config() const { return config_; }

  // ids: [B, T] int64 tokens at positions cache->length .. +T-1 (0 .. T-1 without a cache).
  // Returns logits [B, T, vocab] in the model's dtype; the cache, when given, grows by T.
  virtual torch::Tensor forward(const torch::Tensor& ids, KvCache* cache = nullptr) = 0;

  // The same pass with the logits of the last position only, [B, vocab]: what generation samples from. A prompt's
  // other positions skip the head, the largest layer of a small model (vocab x hidden per position).
  virtual torch::Tensor LastLogits(const torch::Tensor& ids, KvCache* cache = nullptr) {
    return forward(ids, cache).select(1, -1);
  }

  // The same pass in stages, for whole sequences from position 0 without a cache: forward(ids) equals
  // Head(ForwardBlock(L-1, ... ForwardBlock(0, Embed(ids)))). Calibration runs one block at a time on the
  // outputs of blocks already quantized.
  virtual torch::Tensor Embed(const torch::Tensor& ids) = 0;                       // [B, T] -> [B, T, C]
  virtual torch::Tensor ForwardBlock(size_t layer, const torch::Tensor& x) = 0;  // [B, T, C] -> [B, T, C]
  virtual torch::Tensor Head(const torch::Tensor& x) = 0;                         // final norm, logits [B, T, V]
  virtual std::shared_ptr<torch::nn::Module> Block(size_t layer) = 0;              // its linear layers are LmLinear

  // Set by the packed runtime (runtime/packed_runtime.h): the token embedding as packed weights, used for the
  // lookup and, where the head is tied to it, for the logits; the float embedding is then left empty.
  std::shared_ptr<const PackedWeights> packed_embedding;

 protected:
  LmConfig config_;
};

// How scores are formed: scale (0: head_dim^-0.5), soft-capping c (scores -> c tanh(scores / c) before the mask;
// 0: none) and a sliding window (a query at position i sees keys j with i - window < j <= i; 0: every j <= i).
struct AttentionOptions {
  double scale = 0;
  double softcap = 0;
  int64_t window = 0;
};

// Causal scaled-dot-product attention with grouped KV heads. query: [B, H, T, D] at positions past .. past+T-1;
// keys/values: [B, KV, past+T, D] with H a multiple of KV (each KV head serves H/KV consecutive query heads).
// Returns [B, H, T, D]. Softmax in at least float32.
torch::Tensor CausalAttention(const torch::Tensor& query, const torch::Tensor& keys, const torch::Tensor& values,
                              int64_t past, const AttentionOptions& options = {});

// x itself when it is float32 or float64, else x in float32: norms and softmax never run in 16-bit floats.
torch::Tensor AtLeastFloat32(const torch::Tensor& x);

// The model's parameters in groups a streaming reader or writer takes one at a time: each block's parameters
// (full names, in registration order), then the parameters outside the blocks (embeddings, final norm, head).
std::vector<std::vector<std::string>> ParameterGroups(CausalLmImpl& model);

// A parameter handed to a streaming writer: its float32 values (for a quantized weight, the dequantized ones) and,
// where it was quantized, its packed bytes.
struct LmTensorData {
  std::string name;
  torch::Tensor value;
  const PackedWeights* packed = nullptr;
};

// A group's tensors as the model holds them, with their packed bytes where `packed` has them.
std::vector<LmTensorData> GroupData(CausalLmImpl& model, const std::vector<std::string>& group,
                                    const std::map<std::string, PackedWeights>* packed = nullptr);

// A new model of `config.arch` with freshly initialized weights (normal(0, 0.02), as transformers does).
std::shared_ptr<CausalLmImpl> MakeCausalLm(const LmConfig& config);

}  // namespace atq
