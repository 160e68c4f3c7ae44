// Runs a language model from packed weights: every linear layer (and the token embedding with a tied head) is
// quantized to, or adopted in, a packed format and multiplied by atq's kernels; the float weights are released,
// so the model holds its packed bytes plus the small float tensors (norms, biases, learned positions).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "formats/quant_type.h"
#include "kernels/packed_matrix.h"
#include "models/causal_lm.h"

namespace atq {

struct PackedRuntimeOptions {
  QuantType linear_type = QuantType::kTernary2;  // every LmLinear
  QuantType embedding_type = QuantType::kQ8_0;   // the token embedding (and tied head)
  Granularity granularity = Granularity::kChannel;  // atq's own types
};

struct PackedRuntimeSizes {
  int64_t packed_bytes = 0;  // the packed weights
  int64_t float_bytes = 0;   // parameters still in float
};

// Quantizes the model's float weights with the format's reference quantizer and attaches them.
PackedRuntimeSizes PackForRuntime(CausalLmImpl& model, const PackedRuntimeOptions& options);

// Attaches weights that are already packed (a packed checkpoint's tensors, by parameter name: "...q_proj.weight"
// as [out, in]; the token embedding by its own name) and releases the float copies. Names the model does not have
// are an atq::Error; layers not in `weights` stay in float.
PackedRuntimeSizes AttachPackedWeights(CausalLmImpl& model, std::map<std::string, PackedWeights> weights);

// The model's parameters in bytes as held now (packed + float).
PackedRuntimeSizes RuntimeSizes(const CausalLmImpl& model);

}  // namespace atq
