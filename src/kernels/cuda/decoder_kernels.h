// The float parts of a transformer decoder on the GPU, beside the packed matrix products of kernels.cu: RMSNorm,
// bias and residual adds, rotary positions, the key/value cache, causal attention with grouped KV heads, the gated
// MLP's activation and soft-capping. Plain arguments and device pointers (float32 throughout), so that
// decoder_kernels.cu needs none of atq's headers; runtime/cuda_decoder.cc strings them into a model.
//
// Every computation follows the libtorch model's order of float operations (models/llama.cc, CausalAttention), so
// the two agree within the rounding of reductions (sums over a row, over the keys) and of cosf/sinf/expf.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace atq::cuda {

// y[r, c] = x[r, c] * rsqrt(mean_c(x[r, :]^2) + eps) * scale[c]  (scale holds the norm's effective weight)
void LaunchRmsNorm(const float* x, const float* scale, float* y, int64_t rows, int64_t cols, float eps,
                   cudaStream_t stream);
// y[r, c] += bias[c]
void LaunchAddBias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream);
// x += y, `count` values
void LaunchAdd(float* x, const float* y, int64_t count, cudaStream_t stream);
// Rotary positions in Hugging Face's rotate-half layout, in place: x [rows, heads * head_dim], row t at position
// first_position + t, angle of frequency i = (position / position_divisor) * inv_freq[i] (head_dim / 2 of them).
void LaunchRotary(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t first_position,
                  const float* inv_freq, float position_divisor, cudaStream_t stream);
// Writes new keys and values (each [rows, kv_heads * head_dim]) into a layer's cache ([kv_heads, capacity,
// head_dim] each) at positions first_position ...
void LaunchStoreKv(const float* keys, const float* values, float* cache_keys, float* cache_values, int64_t rows,
                   int64_t kv_heads, int64_t head_dim, int64_t capacity, int64_t first_position, cudaStream_t stream);

struct AttentionArgs {
  const float* query = nullptr;   // [steps, heads * head_dim], rotated
  const float* keys = nullptr;    // the layer's cache [kv_heads, capacity, head_dim], positions 0 .. past+steps-1
  const float* values = nullptr;  // likewise
  float* out = nullptr;           // [steps, heads * head_dim]
  int64_t steps = 0, heads = 0, kv_heads = 0, head_dim = 0, capacity = 0;
  int64_t past = 0;               // query t is at position past + t and sees keys up to it
  int64_t window = 0;             // keys j with position - window < j only; 0: every earlier key
  float scale = 1;                // scores = (q . k) * scale
  float softcap = 0;              // scores -> softcap * tanh(scores / softcap); 0: none
};
// softmax(scores) V per query and head, one pass over the keys (a running maximum and sum per warp, combined at the
// end), so no score matrix is materialised. head_dim up to 256.
void LaunchAttention(const AttentionArgs& args, cudaStream_t stream);

enum class GatedActivation : int { kSilu = 0, kGeluTanh = 1 };
// out = act(gate) * up, `count` values
void LaunchGatedActivation(const float* gate, const float* up, float* out, int64_t count, GatedActivation kind,
                           cudaStream_t stream);
// x -> cap * tanh(x / cap), `count` values
void LaunchSoftcap(float* x, int64_t count, float cap, cudaStream_t stream);

}  // namespace atq::cuda
