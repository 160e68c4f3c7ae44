// Perplexity of a causal language model over a token sequence, under three protocols:
// - chunked: consecutive non-overlapping windows of ctx tokens (the incomplete tail dropped); in each window
//   tokens 1..ctx-1 are scored given the tokens before them in that window.
// - sliding: windows of ctx tokens starting every `stride` tokens; every token from position 1 on is scored
//   exactly once, in the first window where it is new, with all earlier tokens of that window as context
//   (Hugging Face's strided perplexity).
// - llama.cpp: BOS opens the token sequence; consecutive chunks of ctx tokens (tail dropped), each chunk's first
//   token replaced by BOS; only positions ctx/2 .. ctx-1 of each chunk are scored (llama-perplexity).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/causal_lm.h"

namespace atq {

enum class PerplexityProtocol { kChunked, kSliding, kLlamaCpp };
PerplexityProtocol ParsePerplexityProtocol(const std::string& name);  // "chunked", "sliding", "llama.cpp"
std::string PerplexityProtocolName(PerplexityProtocol protocol);

struct PerplexityOptions {
  PerplexityProtocol protocol = PerplexityProtocol::kChunked;
  int64_t ctx = 512;
  int64_t stride = 0;      // sliding only; 0: ctx / 2
  int64_t batch = 4;       // windows per forward pass
  int64_t max_windows = 0;  // 0: all
};

// One window of the sequence: tokens [begin, end); targets at window positions [score_from, end - begin), each
// predicted from the logits one position earlier.
struct PerplexityWindow {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t score_from = 1;
  bool bos_first = false;  // the window's first token is replaced by BOS (llama.cpp)
};

// The windows a protocol cuts `token_count` tokens into (for llama.cpp, counted with the BOS already in front).
std::vector<PerplexityWindow> PerplexityWindows(const PerplexityOptions& options, int64_t token_count);

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;  // nats per scored token
  int64_t scored_tokens = 0;
  int64_t windows = 0;
  int64_t text_tokens = 0;  // the tokenized text, without an added BOS
  double seconds = 0;
  double tokens_per_second = 0;  // tokens run through the model per second
  nlohmann::json ToJson(const PerplexityOptions& options) const;
};

// `tokens` is the tokenized text without BOS; the llama.cpp protocol puts `bos_id` in front of the text and of
// every chunk, as llama-perplexity does where the vocabulary adds BOS; bos_id < 0 runs it without (a vocabulary
// that does not add BOS, as GPT-2's). Throws atq::Error when the text is shorter than one window.
PerplexityResult MeasurePerplexity(CausalLmImpl& model, const std::vector<int32_t>& tokens,
                                   const PerplexityOptions& options, int32_t bos_id);

}  // namespace atq
