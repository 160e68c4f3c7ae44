// atq's packed language-model checkpoint: a Hugging Face folder whose model.safetensors holds every quantized
// weight in its packed format (a U8 byte string described by "atq.packed.<name>" metadata, rows = output
// channels, so GPT-2's Conv1D weights are not transposed there), every other tensor in float16 or float32, and
// the recipe in the metadata ("atq.recipe"); config.json and the tokenizer
// files beside it; past a size, sharded with an index as transformers does. The per-layer report goes in
// quantize_report.json beside it. LoadLanguageModel reads it like any Hugging Face folder, dequantizing packed
// tensors (or keeping them packed for the kernels).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>
#include <string>

#include <nlohmann/json.hpp>

#include "formats/quant_type.h"
#include "io/checkpoint.h"
#include "kernels/packed_matrix.h"
#include "models/causal_lm.h"

namespace atq {

struct PackedLmOptions {
  QuantType float_type = QuantType::kF16;  // tensors left unquantized: f16, bf16 or f32
  std::string tokenizer_dir;  // copied in: encoder.json + vocab.bpe (as vocab.json + merges.txt) or vocab.json +
                              // merges.txt or tokenizer.model or tokenizer.json; empty: none
  nlohmann::json recipe;      // stored as metadata atq.recipe
  // Weight files past this size are cut into shards with a model.safetensors.index.json, as transformers does.
  uint64_t max_shard_bytes = 5'000'000'000;
};

struct PackedLmSizes {
  int64_t file_bytes = 0;    // the weight files
  int64_t packed_bytes = 0;  // the packed tensors
  int64_t float_bytes = 0;   // the rest
  int64_t files = 0;         // weight files (shards)
};

// A tensor of the checkpoint as planned before any data: its packed layout, or none for a float tensor.
struct PackedLmTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::optional<Layout> packed;
  // Weights of a packed tensor kept exactly (residual precision boosting): stored after it as "<name>.rpb_index"
  // (I32, flat index row * cols + col, increasing) and "<name>.rpb_value" (F16), as atq's packed classifiers do.
  int64_t boosted = 0;
};

// The checkpoint written group by group (a block's tensors at a time, models/causal_lm.h ParameterGroups): every
// header is written from the plan first, each group's bytes as it arrives, so no more than a group is held.
// Everything stays under temporary names until Commit(), which puts the weight files in place (index last) and
// writes config.json and the tokenizer files; destroyed before that, it leaves no weight file. Throws atq::Error
// naming the folder and the tensor at fault (a group other than planned, packed bytes of the wrong size).
class PackedLmWriter {
 public:
  PackedLmWriter(const LmConfig& config, std::vector<std::vector<PackedLmTensor>> groups, std::string dir,
                 const PackedLmOptions& options);
  ~PackedLmWriter();
  PackedLmWriter(const PackedLmWriter&) = delete;
  PackedLmWriter& operator=(const PackedLmWriter&) = delete;

  void Write(const std::vector<LmTensorData>& group);
  PackedLmSizes Commit();

 private:
  LmConfig config_;
  std::vector<std::vector<PackedLmTensor>> groups_;
  std::string dir_;
  PackedLmOptions options_;
  std::unique_ptr<ShardedSafetensorsWriter> weights_;
  size_t next_group_ = 0;
  PackedLmSizes sizes_;
};

// The plan of a model whose weights `packed` names are packed with those layouts, `boosted` of them with that many
// weights kept exactly.
std::vector<std::vector<PackedLmTensor>> PackedLmPlan(CausalLmImpl& model, const std::map<std::string, Layout>& packed,
                                                      const std::map<std::string, int64_t>& boosted = {});

// Writes `dir` (created if needed) in one go through a PackedLmWriter. `packed` holds the quantized tensors by
// parameter name ([out, in] layouts); the model supplies everything else.
PackedLmSizes SavePackedLm(CausalLmImpl& model, const std::map<std::string, PackedWeights>& packed,
                           const std::string& dir, const PackedLmOptions& options);

}  // namespace atq
