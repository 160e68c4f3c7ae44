// The CUDA kernels of the packed formats: per-segment int8 quantization of the activations, and the packed matrix
// product in integers, y = sum over segments of (scale_w * scale_x) * sum_j (code_j - offset) * q_j, the
// arithmetic of MatMulReference (kernels/matmul_ref.cc) and of the CPU kernels.
//
// Why it is shaped this way: a product with few activation rows is bound by reading the weights once, so every
// warp streams its row through shared memory in 16-byte loads (ggml's blocks of 18, 34, 54 and 66 bytes are not
// 16-byte aligned; staging keeps the global reads coalesced whatever the format), then each lane decodes whole
// pieces (a block, half a TQ2_0 block, 16 bytes of an atq row) into words of byte codes and multiplies them with
// __dp4a; wider batches take the tensor cores (MmaKernel below). The activations are stored in the order each
// decoder produces its codes (ActOrder), so no decoder shuffles. The codes stay unsigned (Q8_0's signed) and
// offset * (sum of each 32 activations) is taken off the integer sums afterwards. Measured figures and what was
// tried: notes/cuda_h200.md.
#include <algorithm>

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
  return even | (odd << 8);
}

// One row per format: a piece is what one lane decodes at a time (kUnits units of 32 codes); a chunk is what a warp
// stages (whole pieces, at most kChunkLimit bytes). Piece() calls fn(unit, words, block_scale) with 8 words of 4
// byte codes per unit (unsigned, Q8_0's signed; in the order of the activations) and, for ggml's blocks, the
// block's scale.
template <KernelFormat F>
struct Format;

// ggml's 32-weight blocks: a piece is a block.
template <int kBytes, int kPieces>
struct Block32 {
  static constexpr int kUnits = 1, kBlockBytes = kBytes, kChunkPieces = kPieces, kChunkBytes = kPieces * kBytes;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return m.cols / 32; }
};

template <>
struct Format<KernelFormat::kQ8_0> : Block32<34, 60> {
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, Fn&& fn) {
    const uint8_t* block = chunk + p * kBlockBytes;
    uint32_t w[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = Word(block + 2 + 4 * i);
    fn(0, w, Half(block));
  }
};

template <>
struct Format<KernelFormat::kQ4_0> : Block32<18, 112> {
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, Fn&& fn) {
    const uint8_t* block = chunk + p * kBlockBytes;
    uint32_t w[8];
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // byte j: weight j (low nibble) and j + 16 (high)
      const uint32_t q = Word(block + 2 + 4 * i);
      w[i] = q & 0x0F0F0F0Fu;
      w[4 + i] = (q >> 4) & 0x0F0F0F0Fu;
    }
    fn(0, w, Half(block));
  }
};

template <>
struct Format<KernelFormat::kTQ2_0> {  // a piece is half a block: 32 bytes, 128 weights
  static constexpr int kUnits = 4, kBlockBytes = 66, kChunkPieces = 62, kChunkBytes = kChunkPieces / 2 * kBlockBytes;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return m.cols / 128; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, Fn&& fn) {
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
      for (int i = 0; i < 8; ++i) w[i] = (q[i] >> (2 * n)) & 0x03030303u;
      fn(n, w, d);
    }
  }
};

template <>
struct Format<KernelFormat::kTQ1_0> {  // a piece is a block: 54 bytes, 256 weights
  static constexpr int kUnits = 8, kBlockBytes = 54, kChunkPieces = 37, kChunkBytes = kChunkPieces * kBlockBytes;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return m.cols / 256; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, Fn&& fn) {
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
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return (m.row_bytes + 15) / 16; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, Fn&& fn) {
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
        for (int n = 0; n < 4; ++n) w[4 * h + n] = (q[2 * k + h] >> (2 * n)) & 0x03030303u;
      }
      fn(k, w, 0.0f);
    }
  }
};

struct Uniform4 {  // 16 bytes, 32 weights; weight j in byte j/2, low nibble first
  static constexpr int kUnits = 1, kChunkPieces = kChunkLimit / 16, kChunkBytes = kChunkLimit;
  __device__ static int64_t RowPieces(const MatrixArgs& m) { return (m.row_bytes + 15) / 16; }
  template <class Fn>
  __device__ static void Piece(const uint8_t* chunk, int p, Fn&& fn) {
    const uint8_t* piece = chunk + 16 * p;
    uint32_t w[8];  // word 2i + h: byte b holds weight 8i + 2b + h
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t q = Word(piece + 4 * i);
      w[2 * i] = q & 0x0F0F0F0Fu;
      w[2 * i + 1] = (q >> 4) & 0x0F0F0F0Fu;
    }
    fn(0, w, 0.0f);
  }
};
template <>
struct Format<KernelFormat::kU4Sym> : Uniform4 {};
template <>
struct Format<KernelFormat::kU4Asym> : Uniform4 {};

__host__ __device__ constexpr bool IsGgml(KernelFormat f) {
  return f == KernelFormat::kQ8_0 || f == KernelFormat::kQ4_0 || f == KernelFormat::kTQ2_0 ||
         f == KernelFormat::kTQ1_0;
}

// The segment of 32-column unit u: a shift for ggml's blocks, a 32-bit division for atq's groups (a 64-bit division
// per unit costs more than the unit's arithmetic).
template <KernelFormat F>
__device__ __forceinline__ int64_t SegmentOf(const MatrixArgs& m, int64_t unit) {
  if constexpr (F == KernelFormat::kQ8_0 || F == KernelFormat::kQ4_0) {
    return unit;
  } else if constexpr (F == KernelFormat::kTQ2_0 || F == KernelFormat::kTQ1_0) {
    return unit >> 3;
  } else {
    return m.segments <= 1 ? 0
                           : static_cast<int64_t>(static_cast<uint32_t>(unit) /
                                                  static_cast<uint32_t>(m.units_per_segment));
  }
}

__device__ __forceinline__ int64_t ScaleGroup(const MatrixArgs& m, int64_t row, int64_t segment) {
  return m.granularity == 0 ? 0 : m.granularity == 1 ? row : row * m.groups_per_row + segment;
}

// Q8_0's codes are signed bytes; every other format's are unsigned with an offset: 8 (Q4_0, u4s), 1 (ternary),
// the group's zero point (u4a).
template <KernelFormat F>
__host__ __device__ constexpr bool SignedCodes() {
  return F == KernelFormat::kQ8_0;
}
template <KernelFormat F>
__device__ __forceinline__ int CodeOffset(const MatrixArgs& m, int64_t row, int64_t segment) {
  if constexpr (F == KernelFormat::kQ8_0) return 0;
  if constexpr (F == KernelFormat::kQ4_0 || F == KernelFormat::kU4Sym) return 8;
  if constexpr (F == KernelFormat::kU4Asym) return m.zeros[ScaleGroup(m, row, segment)];
  return 1;
}

// Sum of 4 byte products, codes signed or unsigned, activations signed.
template <bool kSigned>
__device__ __forceinline__ int Dot4(uint32_t codes, uint32_t acts, int c) {
  if constexpr (kSigned) {
    return __dp4a(static_cast<int>(codes), static_cast<int>(acts), c);
  } else {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(codes), "r"(acts), "r"(c));
    return d;
  }
}

constexpr int kLoadsPerLane = (kStage / 16 + 31) / 32;  // 16-byte loads per lane to stage a chunk

// A chunk's bytes [begin, end) of a row, fetched with aligned 16-byte loads from the 16-byte boundary below begin
// into registers (so that the next chunk is in flight while the warp decodes the current one).
struct ChunkLoad {
  uint4 words[kLoadsPerLane];
  int64_t loads = 0;
  uintptr_t from = 0;  // the address of the chunk's first byte
  __device__ __forceinline__ void Fetch(const uint8_t* begin, const uint8_t* end, int lane) {
    from = reinterpret_cast<uintptr_t>(begin);
    const uint4* source = reinterpret_cast<const uint4*>(from & ~uintptr_t{15});
    loads = (reinterpret_cast<uintptr_t>(end) - reinterpret_cast<uintptr_t>(source) + 15) / 16;
#pragma unroll
    for (int k = 0; k < kLoadsPerLane; ++k) {
      if (lane + 32 * k < loads) words[k] = __ldg(source + lane + 32 * k);
    }
  }
  __device__ __forceinline__ const uint8_t* Store(uint8_t* staged, int lane) const {
#pragma unroll
    for (int k = 0; k < kLoadsPerLane; ++k) {
      if (lane + 32 * k < loads) reinterpret_cast<uint4*>(staged)[lane + 32 * k] = words[k];
    }
    return staged + (from & 15);
  }
};

// Columns [n0, n0 + N) of y (those below n). Each warp computes rows warp, warp + warps in grid, ...; it walks its
// rows' chunks in order, fetching the next chunk before decoding the one staged.
template <KernelFormat F, int N>
__global__ void __launch_bounds__(kWarps * 32) MatMulKernel(MatrixArgs m, ActArgs x, int64_t n0, int64_t n, float* y) {
  using T = Format<F>;
  __shared__ __align__(16) uint8_t stage[kWarps][kStage];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int64_t row_step = static_cast<int64_t>(gridDim.x) * kWarps;
  if (first_row >= m.rows) return;  // the whole warp: no block-wide barrier below
  uint8_t* staged = stage[warp];
  const int64_t row_pieces = T::RowPieces(m);
  const int64_t chunks = row_pieces == 0 ? 0 : (row_pieces + T::kChunkPieces - 1) / T::kChunkPieces;
  const int64_t columns = n - n0 < N ? n - n0 : N;
  auto chunk_end = [&](int64_t begin) { return begin + T::kChunkBytes < m.row_bytes ? begin + T::kChunkBytes : m.row_bytes; };

  ChunkLoad next;
  if (chunks > 0) next.Fetch(m.data + first_row * m.row_bytes, m.data + first_row * m.row_bytes + chunk_end(0), lane);
  for (int64_t row = first_row; row < m.rows; row += row_step) {
    float acc[N];
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = 0.0f;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      __syncwarp();
      const uint8_t* base = next.Store(staged, lane);
      __syncwarp();
      // Fetch the chunk after this one: the next of this row, or the first of the warp's next row.
      const int64_t following_row = chunk + 1 < chunks ? row : row + row_step;
      const int64_t following_chunk = chunk + 1 < chunks ? chunk + 1 : 0;
      if (following_row < m.rows) {
        const uint8_t* row_data = m.data + following_row * m.row_bytes;
        const int64_t begin = following_chunk * T::kChunkBytes;
        next.Fetch(row_data + begin, row_data + chunk_end(begin), lane);
      }
      const int64_t first = chunk * T::kChunkPieces;
      const int64_t pieces = row_pieces - first < T::kChunkPieces ? row_pieces - first : T::kChunkPieces;
      for (int p = lane; p < pieces; p += 32) {
        const int64_t piece = first + p;
        T::Piece(base, p, [&](int k, const uint32_t* w, float block_scale) {
          const int64_t unit = piece * T::kUnits + k;  // columns 32 * unit .. + 31
          if (32 * unit >= m.cols) return;
          const int64_t segment = SegmentOf<F>(m, unit);
          float weight_scale = block_scale;
          if constexpr (!IsGgml(F)) weight_scale = m.scales[ScaleGroup(m, row, segment)];
          const int offset = CodeOffset<F>(m, row, segment);
#pragma unroll
          for (int i = 0; i < N; ++i) {
            if (i >= columns) break;
            const int64_t column = n0 + i;
            const uint4* a = reinterpret_cast<const uint4*>(x.values + column * x.stride + 32 * unit);
            const uint4 a0 = __ldg(a), a1 = __ldg(a + 1);
            constexpr bool kSigned = SignedCodes<F>();
            int dot = Dot4<kSigned>(w[0], a0.x, 0);
            dot = Dot4<kSigned>(w[1], a0.y, dot);
            dot = Dot4<kSigned>(w[2], a0.z, dot);
            dot = Dot4<kSigned>(w[3], a0.w, dot);
            dot = Dot4<kSigned>(w[4], a1.x, dot);
            dot = Dot4<kSigned>(w[5], a1.y, dot);
            dot = Dot4<kSigned>(w[6], a1.z, dot);
            dot = Dot4<kSigned>(w[7], a1.w, dot);
            if constexpr (!kSigned) dot -= offset * __ldg(x.sums + column * (x.stride / 32) + unit);
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
}

// ---- int8 tensor-core products (mma.sync m16n8k32) ----
// A warp multiplies 16 rows by 8 * NT columns over a contiguous quarter of the row's units (32 columns each); the
// block's 4 warps cover the whole row and add their partial sums at the end. Per unit, thread (g = lane / 4,
// t = lane % 4) holds the codes of rows g and g + 8 at activation words t and t + 4 (the A fragment: lo, hi) and
// the activation words t and t + 4 of column g of each 8-column tile (B); integer sums are scaled per segment.
// Why tensor cores even for one column: a ternary byte holds 4 weights, and at the H200's bandwidth an SM must
// take in about 60 weights per clock; __dp4a would need 15 instructions per clock for that (an SM issues 4), one
// mma instruction multiplies 512 weights.

// 4 bytes at any 2-byte-aligned device address (ggml's blocks are 2-byte aligned).
__device__ __forceinline__ uint32_t Load2(const uint8_t* p) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  return static_cast<uint32_t>(__ldg(h)) | (static_cast<uint32_t>(__ldg(h + 1)) << 16);
}
// 4 bytes at any device address: one load where it is 4-byte aligned, else two aligned words around it (the
// buffers are padded past their end).
__device__ __forceinline__ uint32_t Load1(const uint8_t* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  const uint32_t* aligned = reinterpret_cast<const uint32_t*>(address & ~uintptr_t{3});
  if ((address & 3) == 0) return __ldg(aligned);
  return __funnelshift_r(__ldg(aligned), __ldg(aligned + 1), static_cast<uint32_t>(address & 3) * 8);
}
__device__ __forceinline__ float HalfAt(const uint8_t* p) {
  return __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(p))));
}

// Units a format decodes together from the same loaded words (a t2 word holds 2 units' codes for one thread, a
// TQ2_0 half-block 4, a TQ1_0 block 8).
template <KernelFormat F>
__host__ __device__ constexpr int GroupUnits() {
  return F == KernelFormat::kT2 ? 2 : F == KernelFormat::kTQ2_0 ? 4 : F == KernelFormat::kTQ1_0 ? 8 : 1;
}

// Words t and t + 4 of units base .. base + GroupUnits - 1 of a row (the stored codes) and, for ggml's blocks,
// the block's scale.
template <KernelFormat F>
__device__ __forceinline__ void GroupWords(const MatrixArgs& m, const uint8_t* row, int64_t row_index, int64_t base,
                                           int t, uint32_t* lo, uint32_t* hi, float* d) {
  if constexpr (F == KernelFormat::kQ8_0) {
    const uint8_t* block = row + 34 * base;
    lo[0] = Load2(block + 2 + 4 * t);
    hi[0] = Load2(block + 18 + 4 * t);
    d[0] = HalfAt(block);
  } else if constexpr (F == KernelFormat::kQ4_0) {
    const uint8_t* block = row + 18 * base;
    const uint32_t q = Load2(block + 2 + 4 * t);
    lo[0] = q & 0x0F0F0F0Fu;
    hi[0] = (q >> 4) & 0x0F0F0F0Fu;
    d[0] = HalfAt(block);
  } else if constexpr (F == KernelFormat::kTQ2_0) {  // unit 4h + n of a block: bits 2n of half h
    const uint8_t* block = row + 66 * (base / 8);
    const uint8_t* half = block + 32 * ((base % 8) / 4);
    const uint32_t a = Load2(half + 4 * t), b = Load2(half + 16 + 4 * t);
    const float scale = HalfAt(block + 64);
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      lo[n] = (a >> (2 * n)) & 0x03030303u;
      hi[n] = (b >> (2 * n)) & 0x03030303u;
      d[n] = scale;
    }
  } else if constexpr (F == KernelFormat::kTQ1_0) {
    const uint8_t* block = row + 54 * (base / 8);
    const uint32_t a = Load2(block + 4 * t), b = Load2(block + 16 + 4 * t), c = Load2(block + 32 + 4 * t);
    const uint32_t qh = Load2(block + 48);
    const float scale = HalfAt(block + 52);
    constexpr uint32_t kPow3[5] = {1, 3, 9, 27, 81};
#pragma unroll
    for (int k = 0; k < 5; ++k) {  // bytes 0..31, digit k: weight 32k + byte
      lo[k] = Trits(a, kPow3[k]);
      hi[k] = Trits(b, kPow3[k]);
    }
    lo[5] = Trits(c, 1);  // bytes 32..47, digit k: weight 160 + 16k + byte
    hi[5] = Trits(c, 3);
    lo[6] = Trits(c, 9);
    hi[6] = Trits(c, 27);
    lo[7] = Trits(c, 81);
    hi[7] = Trits(qh, t == 0 ? 1u : t == 1 ? 3u : t == 2 ? 9u : 27u);  // qh, digit k: weight 240 + 4k + byte
#pragma unroll
    for (int k = 0; k < 8; ++k) d[k] = scale;
  } else if constexpr (F == KernelFormat::kT2) {
    // Thread t's 4 bytes of the 16 that hold units base and base + 1: byte b has weights 16t + 4b + n, n = 0..3;
    // the activations are stored so that unit base takes n = 0 (lo) and 1 (hi), unit base + 1 takes 2 and 3.
    const uint32_t q = Load1(row + 8 * base + 4 * t);
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const uint32_t word = (q >> (2 * n)) & 0x03030303u;
      if (n % 2 == 0) lo[n / 2] = word; else hi[n / 2] = word;
    }
    d[0] = d[1] = 0.0f;
  } else {  // u4s, u4a: word 2i + h: byte b of bytes 4i.. holds weight 8i + 2b + h
    const uint8_t* unit = row + 16 * base;
    const int shift = 4 * (t & 1);
    lo[0] = (Load1(unit + 4 * (t / 2)) >> shift) & 0x0F0F0F0Fu;
    hi[0] = (Load1(unit + 4 * (t / 2 + 2)) >> shift) & 0x0F0F0F0Fu;
    d[0] = 0.0f;
  }
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "atq's CUDA kernels need int8 mma.sync m16n8k32: compute capability 8.0 or newer (CMAKE_CUDA_ARCHITECTURES)"
#endif
// C += A B with A's codes signed (Q8_0) or unsigned (the rest), B's activations signed.
template <bool kSigned>
__device__ __forceinline__ void Mma(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  if constexpr (kSigned) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

constexpr int kMmaWarps = 4;

// U units per step, whose loads are all issued before the first product (the bytes in flight hide the latency).
template <KernelFormat F, int NT, int U>
__global__ void __launch_bounds__(kMmaWarps * 32) MmaKernel(MatrixArgs m, ActArgs x, int64_t n0, int64_t n, float* y) {
  constexpr int kGroup = GroupUnits<F>();
  static_assert(U % kGroup == 0, "a step holds whole groups");
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * 16;
  const int64_t rows[2] = {row0 + g, row0 + g + 8};
  const bool valid[2] = {rows[0] < m.rows, rows[1] < m.rows};
  const uint8_t* row_data[2] = {m.data + (valid[0] ? rows[0] : 0) * m.row_bytes,
                                m.data + (valid[1] ? rows[1] : 0) * m.row_bytes};
  // Whole groups: t2's unit pair shares its 64 columns (a unit alone is not a run of 32 columns).
  const int64_t units = ((m.cols + 31) / 32 + kGroup - 1) / kGroup * kGroup;
  const int64_t per_warp = ((units + kMmaWarps - 1) / kMmaWarps + U - 1) / U * U;
  const int64_t first = warp * per_warp, last = first + per_warp < units ? first + per_warp : units;
  // The column of B this thread loads in each tile (g), or none.
  int8_t const* act[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int64_t column = n0 + 8 * nt + g;
    act[nt] = column < n ? x.values + column * x.stride : nullptr;
  }
  constexpr bool kSigned = SignedCodes<F>();
  // The activation sums of C's columns (2t, 2t + 1 of each tile) over the segment's units so far: unsigned codes'
  // offset times them is taken off at the flush.
  int c[NT][4], sums[NT][2];
  float acc[NT][4];
  const int32_t* column_sums[NT][2];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) c[nt][e] = 0, acc[nt][e] = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t column = n0 + 8 * nt + 2 * t + h;
      sums[nt][h] = 0;
      column_sums[nt][h] = column < n ? x.sums + column * (x.stride / 32) : nullptr;
    }
  }
  int64_t segment = -1, segment_end = -1;
  const int64_t units_per_segment = F == KernelFormat::kQ8_0 || F == KernelFormat::kQ4_0 ? 1
                                    : IsGgml(F)                                          ? 8
                                                                                         : m.units_per_segment;
  float d_kept[2] = {0.0f, 0.0f};
  auto flush = [&]() {
    if (segment < 0) return;
    float weight_scale[2];
    int offset[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if constexpr (IsGgml(F)) {
        weight_scale[r] = d_kept[r];
      } else {
        weight_scale[r] = valid[r] ? __ldg(m.scales + ScaleGroup(m, rows[r], segment)) : 0.0f;
      }
      offset[r] = valid[r] ? CodeOffset<F>(m, rows[r], segment) : 0;
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t column = n0 + 8 * nt + 2 * t + (e & 1);
        const float act_scale = column < n ? __ldg(x.scales + column * m.segments + segment) : 0.0f;
        const int centered = kSigned ? c[nt][e] : c[nt][e] - offset[e / 2] * sums[nt][e & 1];
        acc[nt][e] += (weight_scale[e / 2] * act_scale) * static_cast<float>(centered);
        c[nt][e] = 0;
      }
      sums[nt][0] = sums[nt][1] = 0;
    }
  };
  for (int64_t base = first; base < last; base += U) {
    uint32_t lo[2][U], hi[2][U], b[U][NT][2];
    float d[2][U];
#pragma unroll
    for (int j = 0; j < U; j += kGroup) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (base + j < last && valid[r]) {
          GroupWords<F>(m, row_data[r], rows[r], base + j, t, lo[r] + j, hi[r] + j, d[r] + j);
        } else {
#pragma unroll
          for (int k = 0; k < kGroup; ++k) lo[r][j + k] = hi[r][j + k] = 0u, d[r][j + k] = 0.0f;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < U; ++j) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        b[j][nt][0] = b[j][nt][1] = 0u;
        if (base + j < last && act[nt] != nullptr) {
          const uint32_t* words = reinterpret_cast<const uint32_t*>(act[nt] + 32 * (base + j));
          b[j][nt][0] = __ldg(words + t);
          b[j][nt][1] = __ldg(words + t + 4);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t u = base + j;
      if (u >= last) break;
      if (u >= segment_end) {  // (atq's groups: one division per segment, not per unit)
        flush();
        segment = SegmentOf<F>(m, u);
        segment_end = IsGgml(F) || m.segments > 1 ? (segment + 1) * units_per_segment : units;
      }
      d_kept[0] = d[0][j];
      d_kept[1] = d[1][j];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        Mma<kSigned>(c[nt], lo[0][j], lo[1][j], hi[0][j], hi[1][j], b[j][nt][0], b[j][nt][1]);
        if constexpr (!kSigned) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            if (column_sums[nt][h] != nullptr) sums[nt][h] += __ldg(column_sums[nt][h] + u);
          }
        }
      }
    }
  }
  flush();
  // The block's 4 warps hold partial sums of the same outputs: add them through shared memory.
  __shared__ float partial[kMmaWarps][NT * 4][32];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) partial[warp][nt * 4 + e][lane] = acc[nt][e];
  }
  __syncthreads();
  for (int index = static_cast<int>(threadIdx.x); index < NT * 4 * 32; index += kMmaWarps * 32) {
    const int slot = index / 32, l = index % 32, nt = slot / 4, e = slot % 4;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kMmaWarps; ++w) sum += partial[w][slot][l];
    const int64_t row = row0 + l / 4 + 8 * (e / 2);
    const int64_t column = n0 + 8 * nt + 2 * (l % 4) + (e & 1);
    if (row < m.rows && column < n) y[column * m.rows + row] = sum;
  }
}

// Where column c goes in a quantized activation row (the decoders' code order).
__device__ __forceinline__ int64_t Destination(int64_t c, ActOrder order) {
  switch (order) {
    case ActOrder::kTernary2:  // byte b of a t2 word holds weights 4b + n: a 4x4 transpose of each 16
      return (c & ~int64_t{15}) | ((c & 3) << 2) | ((c >> 2) & 3);
    case ActOrder::kTernary2Mma:  // weight 16t + 4b + 2m + s sits at 32m + 16s + 4t + b
      return (c & ~int64_t{63}) | (((c >> 1) & 1) << 5) | ((c & 1) << 4) | (((c >> 4) & 3) << 2) | ((c >> 2) & 3);
    case ActOrder::kUniform4: return (c & ~int64_t{7}) | ((c & 1) << 2) | ((c >> 1) & 3);
    default: return c;
  }
}

constexpr int kQuantizeThreadsMax = 1024;

// One block per (row, segment), of up to 1024 threads: the absolute maximum, then every level written into shared
// memory at its place in the kernels' order, then the segment's bytes (and, for the last segment, the row's zero
// padding) stored to device memory 16 bytes at a time, with the sum of every 32 of them.
__global__ void __launch_bounds__(kQuantizeThreadsMax)
    QuantizeKernel(const float* x, int64_t cols, int64_t segment, int64_t segments, ActOrder order, ActArgs out) {
  extern __shared__ __align__(16) uint8_t levels[];
  const int64_t s = blockIdx.x, i = blockIdx.y;
  const int threads = static_cast<int>(blockDim.x), tid = static_cast<int>(threadIdx.x);
  const int64_t first = s * segment;
  const int64_t length = first + segment < cols ? segment : cols - first;
  const int64_t span = s + 1 == segments ? out.stride - first : segment;  // bytes this block stores (a multiple of 16)
  const float* in = x + i * cols + first;
  for (int64_t j = tid; j < span / 16; j += threads) reinterpret_cast<uint4*>(levels)[j] = make_uint4(0, 0, 0, 0);
  float max_abs = 0.0f;
  int bad = 0;
#pragma unroll 4
  for (int64_t j = tid; j < length; j += threads) {
    const float v = in[j];
    bad |= !isfinite(v);
    max_abs = fmaxf(max_abs, fabsf(v));
  }
  __shared__ float maxima[kQuantizeThreadsMax / 32];
  __shared__ int bads[kQuantizeThreadsMax / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    max_abs = fmaxf(max_abs, __shfl_xor_sync(0xFFFFFFFFu, max_abs, offset));
    bad |= __shfl_xor_sync(0xFFFFFFFFu, bad, offset);
  }
  if (tid % 32 == 0) {
    maxima[tid / 32] = max_abs;
    bads[tid / 32] = bad;
  }
  __syncthreads();
  max_abs = 0.0f;
  bad = 0;
  for (int w = 0; w < threads / 32; ++w) {
    max_abs = fmaxf(max_abs, maxima[w]);
    bad |= bads[w];
  }
  // As QuantizeActivations: scale = max / 127, level = nearest even of x * (1 / scale), clamped to +-127.
  const float scale = max_abs / 127.0f;
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  if (tid == 0) out.scales[i * segments + s] = bad ? __int_as_float(0x7FC00000) : scale;
#pragma unroll 4
  for (int64_t j = tid; j < length; j += threads) {
    const int level = max(-127, min(127, __float2int_rn(in[j] * inverse)));
    levels[Destination(j, order)] = static_cast<uint8_t>(static_cast<int8_t>(level));
  }
  __syncthreads();
  uint4* values = reinterpret_cast<uint4*>(out.values + i * out.stride + first);
  for (int64_t j = tid; j < span / 16; j += threads) values[j] = reinterpret_cast<const uint4*>(levels)[j];
  // The sum of each 32 levels (a byte dot product with ones).
  int32_t* sums = out.sums + i * (out.stride / 32) + first / 32;
  for (int64_t k = tid; k < span / 32; k += threads) {
    const uint32_t* words = reinterpret_cast<const uint32_t*>(levels + 32 * k);
    int sum = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) sum = __dp4a(static_cast<int>(words[w]), 0x01010101, sum);
    sums[k] = sum;
  }
}

// As many blocks as are resident at once (each warp then walks several rows, prefetching across them), or fewer
// where the matrix has fewer rows.
template <KernelFormat F, int N>
unsigned ResidentBlocks() {
  static const unsigned blocks = [] {
    int device = 0, sms = 0, per_sm = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, MatMulKernel<F, N>, kWarps * 32, 0);
    return static_cast<unsigned>(sms > 0 && per_sm > 0 ? sms * per_sm : 1024);
  }();
  return blocks;
}

template <KernelFormat F, int N>
void Launch(const MatrixArgs& m, const ActArgs& x, int64_t n0, int64_t n, float* y, cudaStream_t stream) {
  const int64_t needed = (m.rows + kWarps - 1) / kWarps;
  const unsigned blocks = static_cast<unsigned>(needed < ResidentBlocks<F, N>() ? needed : ResidentBlocks<F, N>());
  MatMulKernel<F, N><<<blocks, kWarps * 32, 0, stream>>>(m, x, n0, n, y);
}

template <KernelFormat F, int NT, int U>
void LaunchMma(const MatrixArgs& m, const ActArgs& x, int64_t n0, int64_t n, float* y, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((m.rows + 15) / 16);
  MmaKernel<F, NT, U><<<blocks, kMmaWarps * 32, 0, stream>>>(m, x, n0, n, y);
}

template <KernelFormat F>
void LaunchFormat(const MatrixArgs& m, const ActArgs& x, int64_t n, float* y, KernelPath path, cudaStream_t stream) {
  if (path == KernelPath::kDp4a) {
    if (n == 1) return Launch<F, 1>(m, x, 0, n, y, stream);
    if (n == 2) return Launch<F, 2>(m, x, 0, n, y, stream);
    if (n <= 4) return Launch<F, 4>(m, x, 0, n, y, stream);
    for (int64_t n0 = 0; n0 < n; n0 += 8) Launch<F, 8>(m, x, n0, n, y, stream);
    return;
  }
  // 64 columns per pass (the weights are read once per pass); fewer units in flight as the tiles take registers.
  for (int64_t n0 = 0; n0 < n; n0 += 64) {
    const int64_t width = n - n0;
    if (width <= 8) {
      LaunchMma<F, 1, 16>(m, x, n0, n, y, stream);
    } else if (width <= 16) {
      LaunchMma<F, 2, 8>(m, x, n0, n, y, stream);
    } else if (width <= 32) {
      LaunchMma<F, 4, 8>(m, x, n0, n, y, stream);
    } else {
      LaunchMma<F, 8, 8>(m, x, n0, n, y, stream);
    }
  }
}

}  // namespace

void LaunchQuantizeActivations(const float* x, int64_t n, int64_t cols, int64_t segment, int64_t segments,
                               ActOrder order, const ActArgs& out, cudaStream_t stream) {
  if (n == 0 || segments == 0) return;
  const dim3 grid(static_cast<unsigned>(segments), static_cast<unsigned>(n));
  const int64_t wanted = (std::min(segment, cols) + 7) / 8;  // about 8 values per thread
  const int threads = static_cast<int>(std::min<int64_t>(kQuantizeThreadsMax, std::max<int64_t>(32, (wanted + 31) / 32 * 32)));
  // The largest span a block stores: a segment, or the last one with the row's padding.
  const int64_t span = std::max(segment, out.stride - (segments - 1) * segment);
  if (span > (48 << 10)) {
    // Past 48 KB a kernel must ask (a row-long segment holds up to 65536 columns). Asked at every such launch: the
    // attribute belongs to the current device, and a remembered "already raised" would be wrong for another
    // device or race between threads; the call costs about a microsecond, and only row-long segments need it.
    cudaFuncSetAttribute(QuantizeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(span));
  }
  QuantizeKernel<<<grid, threads, static_cast<size_t>(span), stream>>>(x, cols, segment, segments, order, out);
}

void LaunchMatMul(const MatrixArgs& m, const ActArgs& x, int64_t n, float* y, KernelPath path, cudaStream_t stream) {
  if (n == 0 || m.rows == 0) return;
  switch (m.format) {
    case KernelFormat::kT2: return LaunchFormat<KernelFormat::kT2>(m, x, n, y, path, stream);
    case KernelFormat::kU4Sym: return LaunchFormat<KernelFormat::kU4Sym>(m, x, n, y, path, stream);
    case KernelFormat::kU4Asym: return LaunchFormat<KernelFormat::kU4Asym>(m, x, n, y, path, stream);
    case KernelFormat::kQ8_0: return LaunchFormat<KernelFormat::kQ8_0>(m, x, n, y, path, stream);
    case KernelFormat::kQ4_0: return LaunchFormat<KernelFormat::kQ4_0>(m, x, n, y, path, stream);
    case KernelFormat::kTQ2_0: return LaunchFormat<KernelFormat::kTQ2_0>(m, x, n, y, path, stream);
    case KernelFormat::kTQ1_0: return LaunchFormat<KernelFormat::kTQ1_0>(m, x, n, y, path, stream);
  }
}

}  // namespace atq::cuda
