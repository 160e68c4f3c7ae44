// A packed weight matrix as the kernels see it, and the table that turns each format's bytes into integer
// codes: w = scale * (code - offset), with one scale and one offset per segment of a row. Float types (f32, f16,
// bf16) are multiplied in float and have no segments.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "formats/quant_type.h"

namespace atq {

struct PackedMatrix {
  Layout layout;                  // rows = output features, cols = input features
  const uint8_t* data = nullptr;  // PackedBytes(layout) bytes in the format of layout.type
  // Optional: the same rows regrouped for the CPU kernels (kernels/interleaved.h, InterleaveRows of data), which
  // MatMul reads instead where its target has the kernel; data stays the reference and serves the other rows.
  const uint8_t* interleaved = nullptr;
};

// A packed matrix as a model layer holds it at run time: bytes of its own, or bytes inside a file mapping that
// `mapped` keeps alive (a model run from its file holds no copy of its weights).
struct PackedWeights {
  Layout layout;
  std::vector<uint8_t> bytes;            // owned; empty when mapped
  std::shared_ptr<const uint8_t> mapped;  // the first byte in a mapping, owning what keeps the mapping open
  size_t mapped_size = 0;
  const uint8_t* data() const { return mapped ? mapped.get() : bytes.data(); }
  size_t size() const { return mapped ? mapped_size : bytes.size(); }
  PackedMatrix view() const { return {layout, data()}; }
  // Residual precision boosting (RPB): weights kept at float16 precision beside the codes, by flat index
  // (row * cols + col, strictly increasing), with their stored values and the correction (stored - packed value)
  // a product adds at their positions (AddBoosted). The kernels see only the codes. Set through SetBoosted.
  std::vector<int64_t> boosted_index = {};
  std::vector<float> boosted_value = {};
  std::vector<float> boosted_delta = {};
};

// Checks weights kept exactly of a rows x cols matrix: as many values as indices, indices in range and strictly
// increasing, values finite. `what` (file and tensor) starts the atq::Error message.
void CheckBoosted(const Layout& layout, const std::vector<int64_t>& index, const std::vector<float>& value,
                  const std::string& what);
// Sets the weights `packed` keeps exactly (checked as CheckBoosted does) and computes each correction from the
// decoded codes.
void SetBoosted(PackedWeights& packed, std::vector<int64_t> index, std::vector<float> value, const std::string& what);
// y[n, r] += x[n, c] * delta for every boosted weight (r, c): x [n, cols], y [n, rows], row-major float32.
void AddBoosted(const PackedWeights& packed, const float* x, int64_t n, float* y);

// Columns per segment (the run of a row that shares one weight scale, and so one int8 activation scale):
// 32 for Q8_0, Q4_0 and Q5_0, 256 for TQ1_0 and TQ2_0, the group size for atq's per-group types, the whole row for
// atq's per-tensor and per-channel types (256 past 65536 columns); 0 for f32, f16 and bf16. Throws atq::Error for
// a type kernels cannot run.
int64_t KernelSegment(const Layout& layout);
int64_t SegmentsPerRow(const Layout& layout);  // ceil(cols / segment); 0 for float types
bool IsFloatWeight(QuantType type);            // f32, f16, bf16

// Checks that `bytes` is the layout's packed size, that kernels run the type, and (atq types) that every code is
// valid. `what` (a file and tensor name) starts the atq::Error message.
void CheckPackedMatrix(const PackedMatrix& matrix, int64_t bytes, const std::string& what);

// A quantized matrix's rows as codes: codes[SegmentsPerRow * segment] (columns past cols are 0) and, per segment,
// its scale and offset. The layout's arithmetic is done once at construction; kernels keep one per matrix. The plain
// decoder every kernel is tested against.
class RowDecoder {
 public:
  explicit RowDecoder(const PackedMatrix& matrix);
  void Decode(int64_t row, uint8_t* codes, float* scales, int32_t* offsets) const;
  void Scales(int64_t row, float* scales, int32_t* offsets) const;  // what Decode writes besides the codes

 private:
  PackedMatrix matrix_;
  int64_t segment_, segments_;
  bool ggml_;
  int64_t row_stride_ = 0, block_bytes_ = 0, scale_at_ = 0;  // ggml blocks
  BlockCodesFn block_decode_ = nullptr;
  const uint8_t* scale_bytes_ = nullptr;                       // atq: float32 scales
  const uint8_t* zero_points_ = nullptr;                       // atq asymmetric: uint8 zero points
  int64_t groups_per_row_ = 0;                                 // atq: 0 per tensor, 1 per channel
  bool per_group_ = false;
  int32_t fixed_offset_ = 0;
};

// One row in float32, for any type of the table that kernels run.
void DequantizeRow(const PackedMatrix& matrix, int64_t row, float* out);

}  // namespace atq
