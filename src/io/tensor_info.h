// What a tensor file says about one tensor: name, element type, shape and where its bytes are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/quant_type.h"

namespace atq {

struct TensorInfo {
  std::string name;
  QuantType type = QuantType::kF32;
  std::vector<int64_t> shape;  // outermost dimension first (numpy/torch order), also for GGUF
  Layout layout;               // the 2-D quantization view: rows = shape[0] (output channels), cols = the rest
  uint64_t offset = 0;         // from the start of the file's data section
  uint64_t nbytes = 0;
};

// Product of dims; throws atq::Error (mentioning `what`) on a negative dim or int64 overflow.
int64_t CheckedElementCount(const std::vector<int64_t>& shape, const std::string& what);

// The 2-D layout of a tensor of `type` and `shape`: rows = shape[0] (output channels), cols = product of the
// other dims (scalar -> 1x1, vector -> 1xN). Row-major, so each row is contiguous; for 2-D tensors both
// views agree, and ggml block types additionally need the last dim to be a multiple of the block size.
// Call CheckedElementCount first on untrusted shapes.
Layout LayoutForShape(QuantType type, const std::vector<int64_t>& shape);

std::string ShapeString(const std::vector<int64_t>& shape);  // "[768, 3072]"

}  // namespace atq
