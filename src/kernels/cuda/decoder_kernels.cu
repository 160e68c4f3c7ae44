// The decoder's float kernels (decoder_kernels.h). Simple by design: at batch 1 they move a few kilobytes per layer
// against megabytes of packed weights, so they are written for the same float order as the libtorch model rather
// than for speed; attention is the exception that grows with the context, and runs in one pass over the keys.
#include "kernels/cuda/decoder_kernels.h"

#include <cmath>

namespace atq::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float WarpSum(float value) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

unsigned Blocks(int64_t count) { return static_cast<unsigned>((count + kThreads - 1) / kThreads); }

__global__ void __launch_bounds__(kThreads) RmsNormKernel(const float* x, const float* scale, float* y, int64_t cols,
                                                         float eps) {
  __shared__ float partial[kThreads / 32];
  const float* row = x + blockIdx.x * cols;
  float sum = 0;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) sum += row[c] * row[c];
  sum = WarpSum(sum);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  const float inverse = rsqrtf(total / static_cast<float>(cols) + eps);
  float* out = y + blockIdx.x * cols;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) out[c] = row[c] * inverse * scale[c];
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t rows, int64_t cols) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < rows * cols) y[i] += bias[i % cols];
}

__global__ void AddKernel(float* x, const float* y, int64_t count) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < count) x[i] += y[i];
}

// One thread per (row, head, frequency): the pair (x[i], x[i + half]) -> (x1 cos - x2 sin, x2 cos + x1 sin).
__global__ void RotaryKernel(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t first_position,
                             const float* inv_freq, float position_divisor) {
  const int64_t half = head_dim / 2;
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i >= rows * heads * half) return;
  const int64_t frequency = i % half, head_row = i / half, row = head_row / heads;
  const float position = static_cast<float>(first_position + row) / position_divisor;
  const float angle = position * inv_freq[frequency];
  const float c = cosf(angle), s = sinf(angle);
  float* pair = x + head_row * head_dim + frequency;
  const float x1 = pair[0], x2 = pair[half];
  pair[0] = x1 * c + (-x2) * s;
  pair[half] = x2 * c + x1 * s;
}

__global__ void StoreKvKernel(const float* keys, const float* values, float* cache_keys, float* cache_values,
                              int64_t rows, int64_t kv_heads, int64_t head_dim, int64_t capacity,
                              int64_t first_position) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i >= rows * kv_heads * head_dim) return;
  const int64_t d = i % head_dim, head = (i / head_dim) % kv_heads, row = i / (head_dim * kv_heads);
  const int64_t slot = (head * capacity + first_position + row) * head_dim + d;
  cache_keys[slot] = keys[i];
  cache_values[slot] = values[i];
}

constexpr int kAttentionWarps = 4;

// One block per (query, head); warp w takes keys first + w, first + w + 4, ... keeping its own running maximum m,
// sum l and weighted values (lane holds dimensions lane, lane + 32, ...); the warps' states are merged at the end.
template <int kPerLane>
__global__ void __launch_bounds__(kAttentionWarps * 32) AttentionKernel(AttentionArgs a) {
  const int64_t step = blockIdx.x / a.heads, head = blockIdx.x % a.heads;
  const int64_t kv_head = head / (a.heads / a.kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t position = a.past + step;
  const int64_t first = a.window > 0 && position - a.window + 1 > 0 ? position - a.window + 1 : 0;
  const int64_t dim = a.head_dim;
  const float* query = a.query + (step * a.heads + head) * dim;
  float q[kPerLane], acc[kPerLane];
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    q[i] = d < dim ? query[d] : 0.0f;
    acc[i] = 0.0f;
  }
  float running_max = -INFINITY, running_sum = 0.0f;
  const float* keys = a.keys + kv_head * a.capacity * dim;
  const float* values = a.values + kv_head * a.capacity * dim;
  for (int64_t j = first + warp; j <= position; j += kAttentionWarps) {
    const float* key = keys + j * dim;
    float dot = 0.0f;
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < dim) dot += q[i] * key[d];
    }
    float score = WarpSum(dot) * a.scale;
    if (a.softcap > 0) score = tanhf(score / a.softcap) * a.softcap;
    const float new_max = fmaxf(running_max, score);
    const float keep = expf(running_max - new_max), weight = expf(score - new_max);
    running_sum = running_sum * keep + weight;
    const float* value = values + j * dim;
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      acc[i] = acc[i] * keep + (d < dim ? weight * value[d] : 0.0f);
    }
    running_max = new_max;
  }
  __shared__ float warp_max[kAttentionWarps], warp_sum[kAttentionWarps], warp_acc[kAttentionWarps][kPerLane * 32];
  if (lane == 0) {
    warp_max[warp] = running_max;
    warp_sum[warp] = running_sum;
  }
  for (int i = 0; i < kPerLane; ++i) warp_acc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  // The query's own key is always visible, so some warp has a finite maximum; a warp that saw no key weighs 0.
  float total_max = -INFINITY;
  for (int w = 0; w < kAttentionWarps; ++w) total_max = fmaxf(total_max, warp_max[w]);
  float total_sum = 0.0f;
  for (int w = 0; w < kAttentionWarps; ++w) total_sum += warp_sum[w] * expf(warp_max[w] - total_max);
  float* out = a.out + (step * a.heads + head) * dim;
  for (int64_t d = threadIdx.x; d < dim; d += kAttentionWarps * 32) {
    float value = 0.0f;
    for (int w = 0; w < kAttentionWarps; ++w) value += warp_acc[w][d] * expf(warp_max[w] - total_max);
    out[d] = value / total_sum;
  }
}

__global__ void GatedActivationKernel(const float* gate, const float* up, float* out, int64_t count, int kind) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i >= count) return;
  const float g = gate[i];
  float activated;
  if (kind == static_cast<int>(GatedActivation::kSilu)) {
    activated = g / (1.0f + expf(-g));
  } else {  // GELU, tanh approximation
    constexpr float kAlpha = 0.7978845608028654f;  // sqrt(2 / pi)
    activated = 0.5f * g * (1.0f + tanhf(kAlpha * (g + 0.044715f * g * g * g)));
  }
  out[i] = activated * up[i];
}

__global__ void SoftcapKernel(float* x, int64_t count, float cap) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i < count) x[i] = tanhf(x[i] / cap) * cap;
}

}  // namespace

void LaunchRmsNorm(const float* x, const float* scale, float* y, int64_t rows, int64_t cols, float eps,
                   cudaStream_t stream) {
  if (rows == 0) return;
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, scale, y, cols, eps);
}

void LaunchAddBias(float* y, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols == 0) return;
  AddBiasKernel<<<Blocks(rows * cols), kThreads, 0, stream>>>(y, bias, rows, cols);
}

void LaunchAdd(float* x, const float* y, int64_t count, cudaStream_t stream) {
  if (count == 0) return;
  AddKernel<<<Blocks(count), kThreads, 0, stream>>>(x, y, count);
}

void LaunchRotary(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t first_position,
                  const float* inv_freq, float position_divisor, cudaStream_t stream) {
  const int64_t count = rows * heads * (head_dim / 2);
  if (count == 0) return;
  RotaryKernel<<<Blocks(count), kThreads, 0, stream>>>(x, rows, heads, head_dim, first_position, inv_freq,
                                                        position_divisor);
}

void LaunchStoreKv(const float* keys, const float* values, float* cache_keys, float* cache_values, int64_t rows,
                   int64_t kv_heads, int64_t head_dim, int64_t capacity, int64_t first_position, cudaStream_t stream) {
  const int64_t count = rows * kv_heads * head_dim;
  if (count == 0) return;
  StoreKvKernel<<<Blocks(count), kThreads, 0, stream>>>(keys, values, cache_keys, cache_values, rows, kv_heads,
                                                         head_dim, capacity, first_position);
}

void LaunchAttention(const AttentionArgs& args, cudaStream_t stream) {
  const int64_t blocks = args.steps * args.heads;
  if (blocks == 0) return;
  const dim3 grid(static_cast<unsigned>(blocks)), block(kAttentionWarps * 32);
  if (args.head_dim <= 32) {
    AttentionKernel<1><<<grid, block, 0, stream>>>(args);
  } else if (args.head_dim <= 64) {
    AttentionKernel<2><<<grid, block, 0, stream>>>(args);
  } else if (args.head_dim <= 128) {
    AttentionKernel<4><<<grid, block, 0, stream>>>(args);
  } else {
    AttentionKernel<8><<<grid, block, 0, stream>>>(args);
  }
}

void LaunchGatedActivation(const float* gate, const float* up, float* out, int64_t count, GatedActivation kind,
                           cudaStream_t stream) {
  if (count == 0) return;
  GatedActivationKernel<<<Blocks(count), kThreads, 0, stream>>>(gate, up, out, count, static_cast<int>(kind));
}

void LaunchSoftcap(float* x, int64_t count, float cap, cudaStream_t stream) {
  if (count == 0) return;
  SoftcapKernel<<<Blocks(count), kThreads, 0, stream>>>(x, count, cap);
}

}  // namespace atq::cuda
