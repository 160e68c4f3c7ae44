// The CUDA kernels of the packed formats: per-segment int8 quantization of the activations, and the packed matrix
// product in integers, y = sum over segments of (scale_w * scale_x) * sum_j (code_j - offset) * q_j, the
// arithmetic of MatMulReference (kernels/matmul_ref.cc) and of the CPU kernels.
//
// Why it is shaped this way: a product with few activation rows is bound by reading the weights once, so every
// warp streams its row through shared memory in 16-byte loads (ggml's blocks of 18, 34, 54 and 66 bytes are not
// 16-byte aligned; staging keeps the global reads coalesced whatever the format), then each lane decodes whole
// pieces (a block, half a TQ2_0 block, 16 bytes of an atq row) into int8 words and multiplies them with __dp4a.
// The activations are stored in the order each decoder produces its codes (ActOrder), so no decoder shuffles.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/kernel_args.h"

namespace atq::cuda {
namespace {

constexpr int kWarps = 4;                 // warps per block; each warp computes one output row at a time
constexpr int kChunkLimit = 2048;         // bytes of a row staged at once
constexpr int kStage = kChunkLimit + 48;  // + the misalignment of the chunk's start + slack for Word's second load

// 4 bytes at any address of the staging buffer (which has 4 readable bytes past every byte read).
__device__ __forceinline__ uint32_t Word(const uint8_t* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  const uint32_t* aligned = reinterpret_cast<const uint32_t*>(address & ~uintptr_t{3});
  return __funnelshift_r(aligned[0], aligned[1], static_cast<uint32_t>(address & 3) * 8);
}

__device__ __forceinline__ float Half(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(Word(p) & 0xFFFFu)));
}

// Four base-3 digits at once: digit `power` (1, 3, 9, 27, 81) of each byte of q, as ggml's TQ1_0 stores them
// (FixedPointTrit in formats/ggml_blocks.cc: ((uint8(byte * 3^n) * 3) >> 8) - 1), in two 16-bit lanes per half.
__device__ __forceinline__ uint32_t Trits(uint32_t q, uint32_t power) {
  uint32_t even = q & 0x00FF00FFu, odd = (q >> 8) & 0x00FF00FFu;
  even = ((((even * power) & 0x00FF00FFu) * 3u) >> 8) & 0x00FF00FFu;
  odd = ((((odd * power) & 0x00FF00FFu) * 3u) >> 8) & 0x00FF00FFu;
  return __vsub4(even | (odd << 8), 0x01010101u);
}

// One row per format: a piece is what one lane decodes at a time (kUnits units of 32 codes); a chunk is what a warp
// stages (whole pieces, at most kChunkLimit bytes). Piece() calls fn(unit, words, block_scale) with 8 int8x4 words
// per unit (codes minus offset, in the order of the activations) and, for ggml's blocks, the block's scale.
template <KernelFormat F>
struct Format;

template <>
struct Format<KernelFormat::kQ8_0> {
  static constexpr int kUnits = 1, kBlockBytes = 34, kChunkPieces = 60, kChunkBytes = kChunkPieces * kBlockBytes;
  static constexpr ActOrder kOrder = ActOrder::kNatural;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return m.cols / 32; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, uint32_t, Fn&& fn) {
    const uint8_t* block = chunk + p * kBlockBytes;
    uint32_t w[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = Word(block + 2 + 4 * i);
    fn(0, w, Half(block));
  }
};

template <>
struct Format<KernelFormat::kQ4_0> {
  static constexpr int kUnits = 1, kBlockBytes = 18, kChunkPieces = 112, kChunkBytes = kChunkPieces * kBlockBytes;
  static constexpr ActOrder kOrder = ActOrder::kNatural;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return m.cols / 32; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, uint32_t, Fn&& fn) {
    const uint8_t* block = chunk + p * kBlockBytes;
    uint32_t w[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // byte j: weight j (low nibble) and j + 16 (high)
      const uint32_t q = Word(block + 2 + 4 * i);
      w[i] = __vsub4(q & 0x0F0F0F0Fu, 0x08080808u);
      w[4 + i] = __vsub4((q >> 4) & 0x0F0F0F0Fu, 0x08080808u);
    }
    fn(0, w, Half(block));
  }
};

template <>
struct Format<KernelFormat::kTQ2_0> {  // a piece is half a block: 32 bytes, 128 weights
  static constexpr int kUnits = 4, kBlockBytes = 66, kChunkPieces = 62, kChunkBytes = kChunkPieces / 2 * kBlockBytes;
  static constexpr ActOrder kOrder = ActOrder::kNatural;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return m.cols / 128; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, uint32_t, Fn&& fn) {
    const uint8_t* block = chunk + (p / 2) * kBlockBytes;
    const uint8_t* half = block + 32 * (p % 2);
    const float d = Half(block + 64);
    uint32_t q[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = Word(half + 4 * i);
#pragma unroll
    for (int n = 0; n < 4; ++n) {  // byte m, bits 2n: weight 32n + m of the half
      uint32_t w[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) w[i] = __vsub4((q[i] >> (2 * n)) & 0x03030303u, 0x01010101u);
      fn(n, w, d);
    }
  }
};

template <>
struct Format<KernelFormat::kTQ1_0> {  // a piece is a block: 54 bytes, 256 weights
  static constexpr int kUnits = 8, kBlockBytes = 54, kChunkPieces = 37, kChunkBytes = kChunkPieces * kBlockBytes;
  static constexpr ActOrder kOrder = ActOrder::kNatural;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return m.cols / 256; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, uint32_t, Fn&& fn) {
    const uint8_t* block = chunk + p * kBlockBytes;
    const float d = Half(block + 52);
    constexpr uint32_t kPow3[5] = {1, 3, 9, 27, 81};
    uint32_t w[8];
    // Bytes 0..31: digit n of byte m is weight 32n + m (units 0..4).
#pragma unroll
    for (int n = 0; n < 5; ++n) {
#pragma unroll
      for (int i = 0; i < 8; ++i) w[i] = Trits(Word(block + 4 * i), kPow3[n]);
      fn(n, w, d);
    }
    // Bytes 32..47: digit n of byte m is weight 160 + 16n + m; bytes 48..51 (qh): digit n of byte m is 240 + 4n + m.
    uint32_t b[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) b[i] = Word(block + 32 + 4 * i);
#pragma unroll
    for (int u = 0; u < 2; ++u) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        w[i] = Trits(b[i], kPow3[2 * u]);
        w[4 + i] = Trits(b[i], kPow3[2 * u + 1]);
      }
      fn(5 + u, w, d);
    }
    const uint32_t qh = Word(block + 48);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = Trits(b[i], 81);
      w[4 + i] = Trits(qh, kPow3[i]);
    }
    fn(7, w, d);
  }
};

template <>
struct Format<KernelFormat::kT2> {  // 16 bytes, 64 weights; weight j in byte j/4, bits 2(j%4)
  static constexpr int kUnits = 2, kChunkPieces = kChunkLimit / 16, kChunkBytes = kChunkLimit;
  static constexpr ActOrder kOrder = ActOrder::kTernary2;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return (m.row_bytes + 15) / 16; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, uint32_t, Fn&& fn) {
    const uint8_t* piece = chunk + 16 * p;
    uint32_t q[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) q[i] = Word(piece + 4 * i);
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      uint32_t w[8];  // word 4 * h + n: byte b holds weight 16h + 4b + n (the activations are stored so)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int n = 0; n < 4; ++n) w[4 * h + n] = __vsub4((q[2 * k + h] >> (2 * n)) & 0x03030303u, 0x01010101u);
      }
      fn(k, w, 0.0f);
    }
  }
};

template <KernelFormat F>
struct Uniform4 {  // 16 bytes, 32 weights; weight j in byte j/2, low nibble first
  static constexpr int kUnits = 1, kChunkPieces = kChunkLimit / 16, kChunkBytes = kChunkLimit;
  static constexpr ActOrder kOrder = ActOrder::kUniform4;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return (m.row_bytes + 15) / 16; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, uint32_t offset4, Fn&& fn) {
    const uint8_t* piece = chunk + 16 * p;
    uint32_t w[8];  // word 2i + h: byte b holds weight 8i + 2b + h
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t q = Word(piece + 4 * i);
      w[2 * i] = __vsub4(q & 0x0F0F0F0Fu, offset4);
      w[2 * i + 1] = __vsub4((q >> 4) & 0x0F0F0F0Fu, offset4);
    }
    fn(0, w, 0.0f);
  }
};
template <>
struct Format<KernelFormat::kU4Sym> : Uniform4<KernelFormat::kU4Sym> {};
template <>
struct Format<KernelFormat::kU4Asym> : Uniform4<KernelFormat::kU4Asym> {};

__host__ __device__ constexpr bool IsGgml(KernelFormat f) {
  return f == KernelFormat::kQ8_0 || f == KernelFormat::kQ4_0 || f == KernelFormat::kTQ2_0 ||
         f == KernelFormat::kTQ1_0;
}

__device__ __forceinline__ int64_t ScaleGroup(const MatrixArgs& m, int64_t row, int64_t segment) {
  return m.granularity == 0 ? 0 : m.granularity == 1 ? row : row * m.groups_per_row + segment;
}

// Columns [n0, n0 + N) of y (those below n) for one row per warp.
template <KernelFormat F, int N>
__global__ void __launch_bounds__(kWarps * 32) MatMulKernel(MatrixArgs m, ActArgs x, int64_t n0, int64_t n, float* y) {
  using T = Format<F>;
  __shared__ __align__(16) uint8_t stage[kWarps][kStage];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= m.rows) return;  // the whole warp: no block-wide barrier below
  uint8_t* staged = stage[warp];
  const uint8_t* row_data = m.data + row * m.row_bytes;
  const int64_t row_pieces = T::RowPieces(m);
  const int64_t columns = n - n0 < N ? n - n0 : N;
  float acc[N];
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = 0.0f;

  for (int64_t first = 0, chunk = 0; first < row_pieces; first += T::kChunkPieces, ++chunk) {
    // Stage bytes [begin, end) of the row with aligned 16-byte loads from the 16-byte boundary below begin.
    const int64_t begin = chunk * T::kChunkBytes;
    const int64_t end = begin + T::kChunkBytes < m.row_bytes ? begin + T::kChunkBytes : m.row_bytes;
    const uintptr_t from = reinterpret_cast<uintptr_t>(row_data + begin);
    const uint4* source = reinterpret_cast<const uint4*>(from & ~uintptr_t{15});
    const int64_t loads = (reinterpret_cast<uintptr_t>(row_data + end) - reinterpret_cast<uintptr_t>(source) + 15) / 16;
    __syncwarp();
    for (int64_t i = lane; i < loads; i += 32) reinterpret_cast<uint4*>(staged)[i] = __ldg(source + i);
    __syncwarp();
    const uint8_t* base = staged + (from & 15);
    const int64_t pieces = row_pieces - first < T::kChunkPieces ? row_pieces - first : T::kChunkPieces;
    for (int p = lane; p < pieces; p += 32) {
      const int64_t piece = first + p;
      uint32_t offset4 = 0;
      if constexpr (F == KernelFormat::kU4Asym) {
        offset4 = 0x01010101u * m.zeros[ScaleGroup(m, row, piece * 32 / m.segment)];
      } else if constexpr (F == KernelFormat::kU4Sym) {
        offset4 = 0x08080808u;
      }
      T::Piece(base, p, offset4, [&](int k, const uint32_t* w, float block_scale) {
        const int64_t unit = piece * T::kUnits + k;  // columns 32 * unit .. + 31
        if (32 * unit >= m.cols) return;
        const int64_t segment = 32 * unit / m.segment;
        float weight_scale = block_scale;
        if constexpr (!IsGgml(F)) weight_scale = m.scales[ScaleGroup(m, row, segment)];
#pragma unroll
        for (int i = 0; i < N; ++i) {
          if (i >= columns) break;
          const int64_t column = n0 + i;
          const uint4* a = reinterpret_cast<const uint4*>(x.values + column * x.stride + 32 * unit);
          const uint4 a0 = __ldg(a), a1 = __ldg(a + 1);
          int dot = __dp4a(static_cast<int>(w[0]), static_cast<int>(a0.x), 0);
          dot = __dp4a(static_cast<int>(w[1]), static_cast<int>(a0.y), dot);
          dot = __dp4a(static_cast<int>(w[2]), static_cast<int>(a0.z), dot);
          dot = __dp4a(static_cast<int>(w[3]), static_cast<int>(a0.w), dot);
          dot = __dp4a(static_cast<int>(w[4]), static_cast<int>(a1.x), dot);
          dot = __dp4a(static_cast<int>(w[5]), static_cast<int>(a1.y), dot);
          dot = __dp4a(static_cast<int>(w[6]), static_cast<int>(a1.z), dot);
          dot = __dp4a(static_cast<int>(w[7]), static_cast<int>(a1.w), dot);
          acc[i] += (weight_scale * __ldg(x.scales + column * m.segments + segment)) * static_cast<float>(dot);
        }
      });
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float sum = acc[i];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
    if (lane == 0 && i < columns) y[(n0 + i) * m.rows + row] = sum;
  }
}

// Where position p of a quantized activation row takes its column from (the decoders' code order).
__device__ __forceinline__ int64_t Source(int64_t p, ActOrder order) {
  switch (order) {
    case ActOrder::kTernary2: return (p & ~int64_t{15}) | ((p & 3) << 2) | ((p >> 2) & 3);  // 4x4 transpose
    case ActOrder::kUniform4: return (p & ~int64_t{7}) | ((p & 3) << 1) | ((p >> 2) & 1);
    default: return p;
  }
}

constexpr int kQuantizeThreads = 256;

__global__ void __launch_bounds__(kQuantizeThreads)
    QuantizeKernel(const float* x, int64_t cols, int64_t segment, int64_t segments, ActOrder order, ActArgs out) {
  const int64_t s = blockIdx.x, i = blockIdx.y;
  const float* row = x + i * cols;
  const int64_t first = s * segment, last = first + segment < cols ? first + segment : cols;
  float max_abs = 0.0f;
  int bad = 0;
  for (int64_t j = first + threadIdx.x; j < last; j += kQuantizeThreads) {
    const float v = row[j];
    bad |= !isfinite(v);
    max_abs = fmaxf(max_abs, fabsf(v));
  }
  __shared__ float maxima[kQuantizeThreads / 32];
  __shared__ int bads[kQuantizeThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    max_abs = fmaxf(max_abs, __shfl_xor_sync(0xFFFFFFFFu, max_abs, offset));
    bad |= __shfl_xor_sync(0xFFFFFFFFu, bad, offset);
  }
  if (threadIdx.x % 32 == 0) {
    maxima[threadIdx.x / 32] = max_abs;
    bads[threadIdx.x / 32] = bad;
  }
  __syncthreads();
  max_abs = 0.0f;
  bad = 0;
  for (int w = 0; w < kQuantizeThreads / 32; ++w) {
    max_abs = fmaxf(max_abs, maxima[w]);
    bad |= bads[w];
  }
  // As QuantizeActivations: scale = max / 127, level = nearest even of x * (1 / scale), clamped to +-127.
  const float scale = max_abs / 127.0f;
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  if (threadIdx.x == 0) out.scales[i * segments + s] = bad ? __int_as_float(0x7FC00000) : scale;
  const int64_t stop = s + 1 == segments ? out.stride : first + segment;  // the last segment zeroes the padding
  int8_t* values = out.values + i * out.stride;
  for (int64_t p = first + threadIdx.x; p < stop; p += kQuantizeThreads) {
    const int64_t c = Source(p, order);
    int level = 0;
    if (c < cols) level = max(-127, min(127, __float2int_rn(row[c] * inverse)));
    values[p] = static_cast<int8_t>(level);
  }
}

template <KernelFormat F, int N>
void Launch(const MatrixArgs& m, const ActArgs& x, int64_t n0, int64_t n, float* y, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((m.rows + kWarps - 1) / kWarps);
  MatMulKernel<F, N><<<blocks, kWarps * 32, 0, stream>>>(m, x, n0, n, y);
}

template <KernelFormat F>
void LaunchFormat(const MatrixArgs& m, const ActArgs& x, int64_t n, float* y, cudaStream_t stream) {
  if (n == 1) return Launch<F, 1>(m, x, 0, n, y, stream);
  if (n == 2) return Launch<F, 2>(m, x, 0, n, y, stream);
  if (n <= 4) return Launch<F, 4>(m, x, 0, n, y, stream);
  for (int64_t n0 = 0; n0 < n; n0 += 8) Launch<F, 8>(m, x, n0, n, y, stream);
}

}  // namespace

void LaunchQuantizeActivations(const float* x, int64_t n, int64_t cols, int64_t segment, int64_t segments,
                               ActOrder order, const ActArgs& out, cudaStream_t stream) {
  if (n == 0 || segments == 0) return;
  const dim3 grid(static_cast<unsigned>(segments), static_cast<unsigned>(n));
  QuantizeKernel<<<grid, kQuantizeThreads, 0, stream>>>(x, cols, segment, segments, order, out);
}

void LaunchMatMul(const MatrixArgs& m, const ActArgs& x, int64_t n, float* y, cudaStream_t stream) {
  if (n == 0 || m.rows == 0) return;
  switch (m.format) {
    case KernelFormat::kT2: return LaunchFormat<KernelFormat::kT2>(m, x, n, y, stream);
    case KernelFormat::kU4Sym: return LaunchFormat<KernelFormat::kU4Sym>(m, x, n, y, stream);
    case KernelFormat::kU4Asym: return LaunchFormat<KernelFormat::kU4Asym>(m, x, n, y, stream);
    case KernelFormat::kQ8_0: return LaunchFormat<KernelFormat::kQ8_0>(m, x, n, y, stream);
    case KernelFormat::kQ4_0: return LaunchFormat<KernelFormat::kQ4_0>(m, x, n, y, stream);
    case KernelFormat::kTQ2_0: return LaunchFormat<KernelFormat::kTQ2_0>(m, x, n, y, stream);
    case KernelFormat::kTQ1_0: return LaunchFormat<KernelFormat::kTQ1_0>(m, x, n, y, stream);
  }
}

}  // namespace atq::cuda
