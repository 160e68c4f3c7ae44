// Writes a causal language model as a GGUF file llama.cpp runs: its tensor names and layouts, the metadata
// convert_hf_to_gguf.py writes for GPT-2 and Llama, the GPT-2 BPE vocabulary, and weights quantized with
// llama.cpp's reference quantizers (f32, f16, bf16, q8_0, q4_0, tq2_0, tq1_0).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "formats/quant_type.h"
#include "io/gguf.h"
#include "models/causal_lm.h"

namespace atq {

struct LmGgufOptions {
  QuantType linear_type = QuantType::kQ8_0;     // weights of the transformer blocks' linear layers
  QuantType embedding_type = QuantType::kQ8_0;  // token embedding (and lm_head when untied); position embedding F32
  // For a tensor whose row length is not a multiple of the chosen type's block size; where this one does not
  // fit either, F16 (as llama-quantize falls back).
  QuantType fallback_type = QuantType::kQ8_0;
  // Per Hugging Face tensor name (mixed precision), for any 2-D weight; the same fallback rule applies. Norm
  // weights and biases are always F32, so an override asking them to be anything else is an error.
  std::map<std::string, QuantType> overrides;
  std::string name;  // general.name; empty: the output file's name without its extension
};

struct LmGgufTensorReport {
  std::string hf_name, gguf_name;
  QuantType requested = QuantType::kF32;  // the type the options asked for
  QuantType written = QuantType::kF32;    // the type in the file
  std::string fallback_reason;            // empty unless written != requested
  int64_t bytes = 0;                      // of the tensor's data
  // Quantized 2-D tensors: ||W_file - W||^2 / ||W||^2 of the file's dequantized weights against the weights handed
  // in (for a quantized model, atq's own: the cost of re-quantizing to llama.cpp's grid); -1 otherwise.
  double weight_error = -1;
};

struct LmGgufReport {
  std::vector<LmGgufTensorReport> tensors;  // in file order
  int64_t file_bytes = 0;
};

// A parameter's name and shape, as a streaming writer plans its file before any data.
using LmTensorShape = std::pair<std::string, std::vector<int64_t>>;

// A GGUF file written group by group (a block's tensors at a time, models/causal_lm.h ParameterGroups), so a model
// is never needed whole: the header (names, types, shapes, hence every offset) is written first from the shapes,
// then each group's bytes as it arrives. Weights that arrive packed in the very type planned for them (q8_0, q4_0,
// ... rows in Hugging Face order, [out, in]) are written byte for byte, rows moved to llama.cpp's rotary order:
// a GPTQ result on llama.cpp's own grid keeps its exact codes and scales; others are quantized from their values.
// Under a temporary name until Commit(); destroyed before that, it leaves no file. Throws atq::Error naming the
// file and the problem: missing or malformed tokenizer files, a tokenizer larger than the model's vocabulary, a
// type llama.cpp models do not use, an override naming no tensor, a group other than the one planned.
class LmGgufStream {
 public:
  LmGgufStream(const LmConfig& config, const std::vector<std::vector<LmTensorShape>>& groups,
               const std::string& tokenizer_dir, const LmGgufOptions& options, const std::string& path);
  ~LmGgufStream();
  LmGgufStream(const LmGgufStream&) = delete;
  LmGgufStream& operator=(const LmGgufStream&) = delete;

  void Write(const std::vector<LmTensorData>& group);  // the next group, in the planned order
  LmGgufReport Commit();

 private:
  struct Group;
  LmConfig config_;
  std::string path_;
  GgufWriter writer_;
  std::vector<Group> groups_;
  size_t next_group_ = 0;
  std::vector<uint8_t> rope_freqs_;
  LmGgufReport report_;
};

// ParameterGroups with each parameter's shape.
std::vector<std::vector<LmTensorShape>> ParameterShapeGroups(CausalLmImpl& model);

// Writes `model` (every family) to `path` with the vocabulary in `tokenizer_dir` (tokenizer.json, encoder.json +
// vocab.bpe, or vocab.json + merges.txt) through an LmGgufStream, a block at a time; `packed` weights in their
// planned type are written byte for byte. With `weights`, the model holds placeholders (LmLoadOptions::deferred)
// and each block is read from there before it is written and released after, so the model is never whole.
LmGgufReport WriteLmGguf(CausalLmImpl& model, const std::string& tokenizer_dir, const LmGgufOptions& options,
                         const std::string& path, const std::map<std::string, PackedWeights>* packed = nullptr,
                         const class LmWeightSource* weights = nullptr);

// Throws atq::Error naming `path` where atq does not write this model's family (or a mechanism of it) as GGUF
// yet; commands call it before the work.
void CheckGgufWritable(const LmConfig& config, const std::string& path);

}  // namespace atq
