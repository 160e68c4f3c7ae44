// Q8_0 and Q4_0 rows regrouped 8 at a time in memory, the layout the block32 kernel reads fastest (llama.cpp
// repacks these formats at load for the same reason). In the file's order a 32-weight block of one row is 32
// consecutive bytes, so a SIMD product of one row ends with a horizontal sum per block; interleaved, one 32-bit lane
// of a 256-bit vector holds 4 columns of one of 8 rows, the integer products of 8 rows land in 8 lanes at once, and
// the 8 rows' scales multiply as one vector.
//
// Per group of 8 rows (r = 0..7) and per 32-column block, in this order:
//   - the 8 rows' float16 scales (16 bytes);
//   - Q8_0: 8 chunks of 32 bytes, chunk c holding at byte 4r + j the int8 weight of row r, column 4c + j (256 bytes);
//   - Q4_0: 4 chunks of 32 bytes, chunk c holding at byte 4r + j the 4-bit code (weight + 8) of row r, column
//     8c + j in its low nibble and of column 8c + 4 + j in its high nibble (128 bytes).
// Groups follow each other; rows past the last whole group stay in the file's layout only.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/packed_matrix.h"

namespace atq {

constexpr int64_t kInterleavedRows = 8;

bool HasInterleavedLayout(QuantType type);      // Q8_0 and Q4_0
int64_t InterleavedBlockBytes(QuantType type);  // one group's bytes per 32-column block: 272 or 144

// The matrix's whole groups of 8 rows in the layout above; empty for a type without one or fewer than 8 rows.
// Point PackedMatrix::interleaved at the result for MatMul to use it.
std::vector<uint8_t> InterleaveRows(const PackedMatrix& matrix);

}  // namespace atq
