// `atq inspect`: what a tensor file holds, as JSON and as a table a person reads.
#pragma once

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "io/tensor_file.h"

namespace atq {

// {path, format, metadata, tensors: [{name, type, shape, elements, bytes, file}], by_type: {type: {tensors,
// elements, bytes}}, total: {tensors, elements, bytes}}. Arrays in metadata are shortened past
// `max_array_elements`.
nlohmann::json DescribeTensorFile(const TensorFile& file, size_t max_array_elements = 8);

// The same as aligned text (metadata, one line per tensor, totals by type), printed as it goes: no document of
// every tensor is built, so a file of 200k tensors costs what its index costs.
void PrintInspection(const TensorFile& file, size_t max_array_elements, std::FILE* out);

}  // namespace atq
