// A trained classifier as a packed file: ternary layers stored as atq's t2 (2 bits) or t1.6 (1.6 bits) codes
// with float32 scales, RPB residuals as (int32 index, f16 value) pairs, everything else float32. The container
// is safetensors: packed tensors are U8 byte strings whose layout is in the file's metadata.
//
//   <layer>.weight              U8 [packed bytes]   metadata "atq.packed.<layer>.weight" = {"type","shape",
//                                                   "granularity"}
//   <layer>.weight.rpb_index    I32 [n]             flat positions kept exactly (RPB), when n > 0
//   <layer>.weight.rpb_value    F16 [n]             their values
//   every other parameter and buffer                F32, by its torch name
//   metadata "atq.config"       the checkpoint's config.json; "atq.format" = "atq-packed-classifier/1"
#pragma once

#include <string>

#include "formats/quant_type.h"
#include "models/packed_product.h"
#include "models/classifier_checkpoint.h"

namespace atq {

// Packs every ternary layer of `loaded` as `type` (kTernary2 or kTernary1_6); other layers stay float32.
// Returns the bytes written. Throws atq::Error for other types or a model without ternary layers.
int64_t ExportPackedClassifier(const LoadedClassifier& loaded, QuantType type, const std::string& path);

// True when `path` is a file written by ExportPackedClassifier.
bool IsPackedClassifier(const std::string& path);

// Rebuilds the model from a packed file. Ternary layers keep their packed bytes (RPB weights as a sparse float
// correction) and run as `run` says: through atq's kernels, or dequantized (scale * code, RPB values at their
// positions) so that the forward pass equals the fake-quantized model's. Their statistics (codes, scales, bytes)
// come from the packed data either way.
LoadedClassifier LoadPackedClassifier(const std::string& path, PackedRun run = PackedRun::kDequantized);

}  // namespace atq
