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
  Layout layout;               // the 2-D quantization view: rows = product of leading dims, cols = last dim
  uint64_t offset = 0;         // from the start of the file's data section
  uint64_t nbytes = 0;
};

// Product of dims; throws atq::Error (mentioning `what`) on a negative dim or int64 overflow.
int64_t CheckedElementCount(const std::vector<int64_t>& shape, const std::string& what);

// The 2-D layout of a tensor of `type` and `shape` (scalar -> 1x1, vector -> 1xN).
Layout LayoutForShape(QuantType type, const std::vector<int64_t>& shape);

std::string ShapeString(const std::vector<int64_t>& shape);  // "[768, 3072]"

}  // namespace atq
