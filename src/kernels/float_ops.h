// The float32 vector operations of the decoders' float parts (norms, attention, gated activations), SIMD through
// Highway and picked at run time for the CPU, as MatMul is. Each is the plain loop written in its comment, up to
// the order of the additions (sums run in vector lanes, then across them) and, for exp and tanh, Highway's
// approximations (a few float32 ulps); tests/kernels/float_ops_test.cc holds them to those loops.
#pragma once

#include <cstdint>

namespace atq::vec {

// sum of a[i] * b[i]
float Dot(const float* a, const float* b, int64_t n);
// y[i] += a * x[i]
void AddScaled(float a, const float* x, float* y, int64_t n);
// Attention over a block of query rows (at most 4) sharing one range of keys and values: each key and value is
// loaded once for the block instead of once per query.
// scores[i * score_stride + j] = scale * sum_e q[i * q_stride + e] * keys[j * key_stride + e], i < rows, j < count
void ScoreRows(const float* q, int64_t q_stride, int64_t rows, const float* keys, int64_t key_stride, int64_t count,
               int64_t dim, float scale, float* scores, int64_t score_stride);
// out[i * out_stride + e] = sum_j p[i * p_stride + j] * values[j * value_stride + e], i < rows, e < dim
void WeightedRows(const float* p, int64_t p_stride, int64_t rows, const float* values, int64_t value_stride,
                  int64_t count, int64_t dim, float* out, int64_t out_stride);
// y[i] += x[i]
void Add(const float* x, float* y, int64_t n);
// y[i] = x[i] / sqrt(mean(x^2) + eps) * scale[i]; y may be x
void RmsNorm(const float* x, const float* scale, int64_t n, float eps, float* y);
// y[i] = (x[i] - mean(x)) / sqrt(var(x) + eps) * scale[i] + bias[i] (the biased variance; bias may be null); y may
// be x
void LayerNorm(const float* x, const float* scale, const float* bias, int64_t n, float eps, float* y);
// x[i] = exp(x[i] - shift); returns the sum of the new x
float ExpShifted(float* x, int64_t n, float shift);
// x[i] = tanh(x[i] / cap) * cap
void Softcap(float* x, int64_t n, float cap);
// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g))
void SiluGate(float* gate, const float* up, int64_t n);
// gate[i] = gelu(gate[i]) * up[i], gelu's tanh form 0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3)))
void GeluTanhGate(float* gate, const float* up, int64_t n);
// x[i] = silu(x[i]) and x[i] = gelu(x[i]): the ungated MLP's activations
void Silu(float* x, int64_t n);
void GeluTanh(float* x, int64_t n);

// y[i] = the float16 (IEEE half) or bfloat16 bit pattern x[i] as float32 (exact)
void HalfToFloat(const uint16_t* x, float* y, int64_t n);
void Bfloat16ToFloat(const uint16_t* x, float* y, int64_t n);

}  // namespace atq::vec
