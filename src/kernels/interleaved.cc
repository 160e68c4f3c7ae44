#include "kernels/interleaved.h"

#include <cstring>

#include "formats/ggml_blocks.h"

namespace atq {

bool HasInterleavedLayout(QuantType type) { return type == QuantType::kQ8_0 || type == QuantType::kQ4_0; }

int64_t InterleavedBlockBytes(QuantType type) {
  return type == QuantType::kQ8_0 ? 2 * kInterleavedRows + 8 * 32 : 2 * kInterleavedRows + 4 * 32;
}

std::vector<uint8_t> InterleaveRows(const PackedMatrix& matrix) {
  const Layout& layout = matrix.layout;
  if (!HasInterleavedLayout(layout.type) || layout.rows < kInterleavedRows) return {};
  const bool q8 = layout.type == QuantType::kQ8_0;
  const int64_t groups = layout.rows / kInterleavedRows, blocks = layout.cols / 32;
  const int64_t source_block = q8 ? static_cast<int64_t>(sizeof(BlockQ8_0)) : static_cast<int64_t>(sizeof(BlockQ4_0));
  const int64_t block_bytes = InterleavedBlockBytes(layout.type);
  std::vector<uint8_t> out(static_cast<size_t>(groups * blocks * block_bytes));
  uint8_t codes[32];  // one Q4_0 block's 4-bit codes in column order
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* to = out.data() + (g * blocks + b) * block_bytes;
      for (int64_t r = 0; r < kInterleavedRows; ++r) {
        const uint8_t* from = matrix.data + ((g * kInterleavedRows + r) * blocks + b) * source_block;
        std::memcpy(to + 2 * r, from, 2);  // the float16 scale
        if (q8) {
          for (int64_t c = 0; c < 8; ++c) std::memcpy(to + 16 + 32 * c + 4 * r, from + 2 + 4 * c, 4);
        } else {
          Q4_0Codes(from, codes);  // the format's own nibble order, decoded where it is defined
          for (int64_t c = 0; c < 4; ++c) {
            for (int64_t j = 0; j < 4; ++j) {
              to[16 + 32 * c + 4 * r + j] = static_cast<uint8_t>(codes[8 * c + j] | (codes[8 * c + 4 + j] << 4));
            }
          }
        }
      }
    }
  }
  return out;
}

}  // namespace atq
