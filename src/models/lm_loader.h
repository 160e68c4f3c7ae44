// Loads a causal language model and its tokenizer from any file atq reads: a Hugging Face folder (config.json +
// model.safetensors or a sharded index; F32/F16/BF16), a llama2.c .bin checkpoint, or a GGUF file written by
// llama.cpp (llama and gpt2 architectures; F32, F16, BF16, Q8_0, Q4_0, TQ1_0, TQ2_0 tensors dequantized).
#pragma once

#include <map>
#include <optional>
#include <unordered_map>
#include <vector>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "io/tensor_file.h"
#include "io/tokenizer.h"
#include "kernels/packed_matrix.h"
#include "models/causal_lm.h"

namespace atq {

// The "atq.format" metadata of a packed language-model checkpoint (quant/packed_lm.h writes it). The loader
// refuses any other atq-packed-lm version: a newer layout read by this reader would be silent garbage.
inline constexpr std::string_view kPackedLmFormat = "atq-packed-lm/1";
// The tensors beside a packed one that hold the weights it keeps exactly (residual precision boosting): flat
// indices (I32, increasing) and values (F16). Readers that predate them refuse the file (a tensor with no place).
inline constexpr const char* kBoostedIndexSuffix = ".rpb_index";
inline constexpr const char* kBoostedValueSuffix = ".rpb_value";

struct LmLoadOptions {
  // A tokenizer overriding the default: a folder with encoder.json + vocab.bpe (or vocab.json + merges.txt),
  // a SentencePiece .model, a llama2.c tokenizer .bin, or a .gguf. Empty: the model's own (GGUF vocabulary;
  // tokenizer files in the Hugging Face folder; tokenizer.bin or tok<vocab>.bin beside a llama2.c file), else
  // GPT-2's files from the set-up's data folder for a 50257-token vocabulary.
  std::string tokenizer;
  torch::Dtype dtype = torch::kFloat32;
  torch::Device device = torch::kCPU;
  // Run from the file (inference only): 2-D weights the kernels run in their stored type (quantized, f16, bf16)
  // stay packed views of the mapping (LanguageModel::packed; their parameters are placeholders until the packed
  // runtime, runtime/packed_runtime.h, attaches the bytes), and float32 tensors are read-only views of it, so the
  // model holds almost nothing beyond the mapped file. Otherwise every weight is converted to float32 in memory.
  bool keep_packed = false;
  // Load weights holding NaN or infinity instead of refusing them (to inspect a broken checkpoint).
  bool allow_nonfinite = false;
  // Read no weight yet (Hugging Face folders and GGUF files): the model's linear layers and embeddings are
  // placeholders, LanguageModel::weights reads them a block at a time (LoadLmParameters), so a model larger than
  // memory can be quantized. float32 on the CPU only. A llama2.c file is read whole all the same.
  bool deferred = false;
};

class LmWeightSource;

struct LanguageModel {
  std::shared_ptr<CausalLmImpl> model;  // eval mode
  std::unique_ptr<Tokenizer> tokenizer;
  std::string path;
  std::string format;           // "huggingface", "llama2c", "gguf"
  std::string tokenizer_source;  // where the tokenizer came from
  std::map<std::string, PackedWeights> packed;  // with keep_packed: Hugging Face parameter name -> packed bytes
  std::shared_ptr<const LmWeightSource> weights;  // with deferred: where the weights are read from
  nlohmann::json Describe() const;  // architecture, sizes, parameter count, format, tokenizer
};

// One weight as a model parameter: float32 values or, read packed, the bytes of a quantized matrix the kernels run
// (`value` is then a placeholder of its shape).
struct LoadedWeight {
  std::string name;
  torch::Tensor value;
  std::optional<PackedWeights> packed;
};

// A Hugging Face folder or GGUF file opened for reading a few weights at a time: the file stays mapped, and a
// tensor is converted (to float32 in atq's layout: Conv1D transposed, GGUF's rotary rows reordered, fused
// projections split, Gemma's norm offset removed; or to the packed bytes the kernels run) only when read.
// Opening checks the config against the file and learns every tensor's parameter names and shapes, reading no
// weight.
class LmWeightSource : public std::enable_shared_from_this<LmWeightSource> {
 public:
  static std::shared_ptr<const LmWeightSource> Open(const std::string& path, bool allow_nonfinite = false);

  const LmConfig& config() const { return config_; }
  const std::string& format() const { return format_; }  // "huggingface" or "gguf"
  const TensorFile& file() const { return file_; }
  // Every parameter the file provides, with its shape.
  const std::map<std::string, std::vector<int64_t>>& shapes() const { return shapes_; }
  // The weights of `names`, with the other parts of a fused tensor among them. Throws atq::Error for a name
  // the file does not hold, a non-finite value (unless allowed), a type atq cannot read. `keep_packed`: weights
  // the kernels run in their stored type (quantized, f16, bf16) come packed, viewing the mapping, and float32
  // tensors that need no conversion are read-only views of it too; both keep the source alive.
  std::vector<LoadedWeight> Read(const std::vector<std::string>& names, bool keep_packed = false) const;
  std::vector<LoadedWeight> ReadAll(bool keep_packed = false) const;
  // Bytes the file stores for the tensors `names` come from (what reading them pages in).
  int64_t StoredBytes(const std::vector<std::string>& names) const;
  // Every parameter of `model` is in the file with its shape, and every weight of the file has a place.
  void RequireSameParameters(const CausalLmImpl& model) const;

 private:
  LmWeightSource(TensorFile file, bool allow_nonfinite);
  std::vector<size_t> EntriesOf(const std::vector<std::string>& names) const;
  std::vector<LoadedWeight> ReadEntries(const std::vector<size_t>& entries, bool keep_packed) const;
  // Pairs each packed tensor with its RPB tensors (boosted_of_); returns which entries are such parts.
  std::vector<bool> FindBoosted();

  TensorFile file_;
  bool allow_nonfinite_ = false;
  LmConfig config_;
  std::string format_;
  std::vector<std::vector<std::string>> produced_;  // per file tensor: the parameters it loads into
  std::unordered_map<std::string, size_t> entry_of_;
  std::unordered_map<size_t, std::pair<size_t, size_t>> boosted_of_;  // packed tensor -> its RPB index, values
  std::map<std::string, std::vector<int64_t>> shapes_;
};

// Fills the named parameters of a model built with placeholders (and any fused siblings) from `source`, float32.
void LoadLmParameters(CausalLmImpl& model, const LmWeightSource& source, const std::vector<std::string>& names);
// Puts placeholders back, freeing the named parameters' memory.
void ReleaseLmParameters(CausalLmImpl& model, const std::vector<std::string>& names);

// Throws atq::Error naming the file and tensor at fault: unknown architecture, a missing or misshapen tensor,
// a tensor the architecture has no place for, a type atq cannot dequantize.
LanguageModel LoadLanguageModel(const std::string& path, const LmLoadOptions& options = {});

// Copies `weights` (Hugging Face names, atq's [out, in] linear layout) into `model`; every parameter must be
// there with its exact shape, and every weight must have a place. `source` starts error messages.
void AssignLmWeights(CausalLmImpl& model, std::map<std::string, torch::Tensor> weights, const std::string& source);

// q/k projection rows from the interleaved RoPE order (llama2.c, ggml) to Hugging Face's rotate-half order.
// weight: [heads * head_dim, in].
torch::Tensor InterleavedToHalfRotary(const torch::Tensor& weight, int64_t heads);

}  // namespace atq
