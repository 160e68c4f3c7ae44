// Reads Andrej Karpathy's llama2.c checkpoints (the legacy run.c format: seven int32 sizes, then float32
// weights; a negative vocabulary size means a separate classifier). Tensors are named and shaped as Hugging
// Face's LlamaForCausalLM names them, but q/k rows keep llama2.c's interleaved RoPE order (see
// InterleavedToHalfRotary in the model loader).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace atq {

struct Llama2cHeader {
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;  // positive here; `shared_classifier` says whether it was negative in the file
  int32_t seq_len = 0;
  bool shared_classifier = true;
};

struct Llama2cTensor {
  std::string name;             // e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;   // torch order
  const float* data = nullptr;  // into the mapped file
};

class Llama2cCheckpoint {
 public:
  // Throws atq::Error naming the file for a short file, sizes that are not positive or consistent, or a size
  // that does not match the header's weights.
  static Llama2cCheckpoint Open(const std::string& path);

  const Llama2cHeader& header() const { return header_; }
  const std::vector<Llama2cTensor>& tensors() const { return tensors_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  Llama2cHeader header_;
  std::vector<Llama2cTensor> tensors_;
};

}  // namespace atq
