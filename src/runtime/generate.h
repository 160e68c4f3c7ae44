// Text generation with a KV cache: greedy (temperature 0) or temperature + nucleus (top-p) sampling from a
// seeded generator, so a seed reproduces its text.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "models/causal_lm.h"

namespace atq {

struct GenerateOptions {
  int64_t max_tokens = 128;  // new tokens at most
  double temperature = 0;    // 0: greedy
  double top_p = 1.0;        // keep the smallest set of tokens whose probability reaches top_p
  uint64_t seed = 0;
  std::vector<int32_t> stop_tokens;  // generation ends after producing one of these (it is kept in the output)
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens only
  std::string stop_reason;      // "max_tokens", "stop_token", "context"
  double prefill_seconds = 0;   // the prompt's forward pass (time to first token)
  double decode_seconds = 0;    // every later step
  double decode_tokens_per_second = 0;
};

// Picks the next token from logits [vocab] (float32 on CPU): argmax for temperature 0, else a draw from the
// top-p set of softmax(logits / temperature) using `uniform`, a number in [0, 1).
int32_t SampleToken(const torch::Tensor& logits, double temperature, double top_p, double uniform);

// Continues `prompt` (at least one token; callers put BOS there for an empty prompt). `on_token` sees each
// new token as it is produced. Stops at max_tokens, a stop token, or the model's context for learned positions.
GenerateResult Generate(CausalLmImpl& model, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token = nullptr);

}  // namespace atq
