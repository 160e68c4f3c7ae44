// The family table: one row per Hugging Face model_type atq runs, read by every caller (config parsing and
// writing, the loader, the model builder). A row names the family, its transformers class and llama.cpp
// architecture, the builder that runs it, and the functions that read and write its own config keys and split its
// fused tensors. Adding a family is one row plus, where it needs one, a new mechanism of the rotary decoder
// (LmConfig's switches); nothing is ever treated as Llama by default.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "models/lm_config.h"
#include "models/lm_gguf_names.h"

namespace atq {

struct LmFamily {
  std::string_view model_type;   // config.json "model_type"
  std::string_view hf_class;     // config.json "architectures"[0]
  LmArch builder;
  std::string_view gguf_arch;    // general.architecture in llama.cpp's files (Mistral's converter writes "llama")
  const GgufTensorNames& (*gguf_names)();  // llama.cpp's tensor names of that architecture
  bool tied_by_default;          // tie_word_embeddings when config.json leaves it out (the class default)
  // llama.cpp's converter permutes q/k rows into ggml's interleaved RoPE order for "llama" (which rotates pairs
  // 2i, 2i+1); the NEOX-style architectures (qwen2, ...) keep transformers' rotate-half order.
  bool gguf_rope_interleaved;
  // Reads the family's own keys (after the shared ones) and sets its mechanisms; throws atq::Error naming `file`
  // for a setting atq does not run.
  void (*read_config)(const nlohmann::json& config, const std::string& file, LmConfig& out);
  // Writes them back, so transformers loads what atq wrote.
  void (*write_config)(const LmConfig& config, nlohmann::json& out);
  // A checkpoint tensor stored fused (Phi-3's qkv_proj, gate_up_proj) as the parts atq's modules hold; empty
  // when `name` is not fused. nullptr for families without fused tensors.
  std::vector<std::pair<std::string, torch::Tensor>> (*split_fused)(const LmConfig& config, const std::string& name,
                                                                   const torch::Tensor& tensor);
  // The inverse, for writing a Hugging Face folder transformers loads: the parts fused back under the
  // checkpoint's names (in place, in order). nullptr for families without fused tensors.
  void (*fuse_for_checkpoint)(std::vector<std::pair<std::string, torch::Tensor>>& tensors);
};

const std::vector<LmFamily>& LmFamilies();
// The row of `model_type`; throws atq::Error listing the supported families for any other.
const LmFamily& FamilyByModelType(std::string_view model_type, const std::string& what);
// The row whose llama.cpp architecture is `gguf_arch`; throws atq::Error naming `what` and the known ones.
const LmFamily& FamilyByGgufArch(std::string_view gguf_arch, const std::string& what);
// The row a config.json names: its model_type, else its architectures; throws atq::Error listing the supported
// ones.
const LmFamily& FamilyOfConfig(const nlohmann::json& config, const std::string& file);
std::string SupportedFamilies();  // "gpt2, llama, mistral, ..."
// The row of a config: its family, or the builder's own (gpt2, llama) when the family is empty. Throws atq::Error
// where the two disagree.
const LmFamily& FamilyOf(const LmConfig& config);

}  // namespace atq
