// A pre-norm transformer decoder (the Llama-family block of models/llama.h, and GPT-2's of models/gpt2.h)
// described by plain values and packed weights, without libtorch, and run by a backend: the scalar reference here,
// the CPU one (kernels/cpu_decoder.h) or the CUDA one (kernels/cuda/cuda_decoder.h). runtime/device_model.h fills a
// DecoderSpec from a loaded model; the backends run the model from it, and the reference is what both they and the
// libtorch model are checked against.
//
// The block: x += o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x)))); x += down(act(gate(n2(x))) * up(n2(x))), with
// Gemma 2's sandwich norms where set (the attention and MLP outputs normalized before they are added). GPT-2's
// variant: LayerNorm with a bias for the norms, learned positions added to the embedding instead of rotary ones,
// q, k and v from one fused projection, and an ungated MLP x += down(act(up(n2(x)))).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/packed_matrix.h"

namespace atq {

struct DecoderLinear {
  const PackedWeights* weights = nullptr;  // [out, in], owned by the caller, alive as long as the spec's users
  std::vector<float> bias;                 // out values, or empty
};

// The norm's scale as it multiplies (Gemma's 1 + w already added) and, for LayerNorm, its bias (empty: none).
struct DecoderNorm {
  std::vector<float> scale, bias;
};

struct DecoderLayer {
  // post_attention_norm is the MLP's input norm, or with sandwich norms the attention output's; the feed-forward
  // pair only with sandwich norms.
  DecoderNorm input_norm, post_attention_norm, pre_feedforward_norm, post_feedforward_norm;
  // q, k and v, or (GPT-2's c_attn) qkv alone: one projection whose output rows are q's, then k's, then v's.
  DecoderLinear q, k, v, qkv, o;
  DecoderLinear gate, up, down;  // no gate weights: the ungated MLP down(act(up(x)))
  int64_t window = 0;            // sliding window of this layer's attention; 0: every earlier position
  float attention_scale = 0;     // this layer's own score scale (GPT-2's scale_attn_by_inverse_layer_idx); 0: the spec's
};

enum class DecoderActivation { kSilu, kGeluTanh };
enum class DecoderNormKind { kRms, kLayer };  // RMSNorm, or LayerNorm (mean removed, then a bias added)

struct DecoderSpec {
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, vocab = 0;
  int64_t max_positions = 0;  // the context the model was trained for
  float norm_eps = 1e-5f;
  DecoderNormKind norm = DecoderNormKind::kRms;
  DecoderActivation activation = DecoderActivation::kSilu;
  bool sandwich_norms = false;
  float attention_scale = 0;     // resolved (head_dim^-0.5 unless the family sets another)
  float attention_softcap = 0;   // 0: none
  float final_softcap = 0;       // 0: none
  float embedding_scale = 0;     // Gemma's sqrt(hidden) in float; 0: none
  std::vector<float> inv_freq;   // head_dim / 2 rotary frequencies, scaling applied; empty: no rotary positions
  float rope_position_divisor = 1;  // linear RoPE scaling
  // Learned positions (GPT-2's wpe), [max_positions, hidden] added to the token embedding; empty: none.
  std::vector<float> position_embedding;
  std::vector<DecoderLayer> layers;
  DecoderNorm final_norm;
  const PackedWeights* embedding = nullptr;  // [vocab, hidden], rows looked up
  const PackedWeights* head = nullptr;       // [vocab, hidden], the embedding itself where tied
};

// Throws atq::Error naming what is inconsistent (sizes, missing weights, a weight of the wrong shape, a rotary
// head_dim that is odd or a head_dim over 256, neither rotary nor learned positions, residual-precision weights,
// which the decoder backends do not add).
void CheckDecoderSpec(const DecoderSpec& spec);
// Whether the spec uses GPT-2's parts (LayerNorm, learned positions, a fused qkv, an ungated MLP, per-layer score
// scales), which only the CPU backends run.
bool UsesGpt2Parts(const DecoderSpec& spec);

// What every backend's Forward checks first: tokens to run, room in the cache, ids inside the vocabulary.
void CheckDecoderCall(const DecoderSpec& spec, const int64_t* ids, int64_t n, int64_t length, int64_t capacity);
// The rows of the token embedding for ids[0..n), times the embedding scale where the model has one, plus the learned
// positions first .. first + n - 1 where it has them: x [n, hidden].
void EmbedTokens(const DecoderSpec& spec, const int64_t* ids, int64_t n, int64_t first, float* x);

// GPT-2's fused projection's output qkv [n, q_width + 2 kv_width] into q [n, q_width], k and v [n, kv_width].
void SplitFusedQkv(const DecoderSpec& spec, const float* qkv, int64_t n, float* q, float* k, float* v);
// The score scale of a layer: its own where set, else the spec's.
float LayerScoreScale(const DecoderSpec& spec, size_t layer);

// A decoder placed on a device with its key/value cache.
class DecoderRunner {
 public:
  virtual ~DecoderRunner() = default;
  // Runs `n` tokens at positions length() .. length() + n - 1 and appends them to the cache. logits: [n, vocab]
  // when all_logits, else [1, vocab] for the last token. Throws atq::Error for a token outside the vocabulary or a
  // context past capacity(), leaving the cache as it was.
  virtual void Forward(const int64_t* ids, int64_t n, bool all_logits, std::vector<float>& logits) = 0;
  virtual void Reset() = 0;  // forgets every cached position
  virtual int64_t length() const = 0;
  virtual int64_t capacity() const = 0;
  virtual std::string description() const = 0;  // for reports: "cuda sm_90 (NVIDIA H200)"
};

// The decoder on `device` with room for `capacity` positions (the weights are copied or referenced as the backend
// needs; the spec itself need not outlive the runner, its PackedWeights must). kCpu runs atq's CPU kernels
// (kernels/cpu_decoder.h; the scalar reference in the CUDA-only build, which has no Highway); kCuda needs a build
// with CUDA and a visible GPU.
std::unique_ptr<DecoderRunner> MakeDecoderRunner(Device device, const DecoderSpec& spec, int64_t capacity);

// The scalar reference (MatMulReference and plain loops) that every backend is checked against.
std::unique_ptr<DecoderRunner> MakeReferenceDecoder(const DecoderSpec& spec, int64_t capacity);

}  // namespace atq
