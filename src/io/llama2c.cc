// llama2.c checkpoint reader: the weight order of run.c's memory_map_weights().
#include "io/llama2c.h"

#include <cstring>
#include <limits>

#include "util/error.h"

namespace atq {

Llama2cCheckpoint Llama2cCheckpoint::Open(const std::string& path) {
  Llama2cCheckpoint checkpoint;
  checkpoint.file_ = MappedFile::Open(path);
  const MappedFile& file = checkpoint.file_;
  constexpr size_t kHeaderBytes = 7 * sizeof(int32_t);
  Require(file.size() >= kHeaderBytes, "{}: {} bytes is too short for a llama2.c header", path, file.size());
  int32_t fields[7];
  std::memcpy(fields, file.data(), kHeaderBytes);
  Require(fields[0] != 0x616b3432, "{}: llama2.c version-1+ exports (magic \"ak42\") are not supported; export with "
          "the legacy format (version 0)", path);
  Llama2cHeader& h = checkpoint.header_;
  h = {fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], fields[5] > 0};
  Require(h.vocab_size != std::numeric_limits<int32_t>::min(), "{}: vocabulary size out of range", path);
  h.vocab_size = h.vocab_size < 0 ? -h.vocab_size : h.vocab_size;
  Require(h.dim > 0 && h.hidden_dim > 0 && h.n_layers > 0 && h.n_heads > 0 && h.n_kv_heads > 0 && h.vocab_size > 0 &&
              h.seq_len > 0,
          "{}: header sizes must be positive (dim {}, hidden {}, layers {}, heads {}, kv heads {}, vocab {}, seq {})",
          path, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len);
  Require(h.dim % h.n_heads == 0 && h.n_heads % h.n_kv_heads == 0 && (h.dim / h.n_heads) % 2 == 0,
          "{}: dim {} / heads {} / kv heads {} are inconsistent", path, h.dim, h.n_heads, h.n_kv_heads);
  Require(h.dim <= (1 << 16) && h.hidden_dim <= (1 << 18) && h.n_layers <= 1024 && h.vocab_size <= (1 << 22) &&
              h.seq_len <= (1 << 22),
          "{}: header sizes are implausibly large (dim {}, hidden {}, layers {}, vocab {}, seq {})", path, h.dim,
          h.hidden_dim, h.n_layers, h.vocab_size, h.seq_len);

  const int64_t dim = h.dim, hidden = h.hidden_dim, layers = h.n_layers, head_size = h.dim / h.n_heads;
  const int64_t kv_dim = head_size * h.n_kv_heads;
  // (name pattern with {} for the layer, per-layer shape) in file order; layer-less tensors use layers = 1.
  struct Block {
    std::string name;
    std::vector<int64_t> shape;
    bool per_layer;
  };
  const std::vector<Block> blocks = {
      {"model.embed_tokens.weight", {h.vocab_size, dim}, false},
      {"model.layers.{}.input_layernorm.weight", {dim}, true},
      {"model.layers.{}.self_attn.q_proj.weight", {dim, dim}, true},
      {"model.layers.{}.self_attn.k_proj.weight", {kv_dim, dim}, true},
      {"model.layers.{}.self_attn.v_proj.weight", {kv_dim, dim}, true},
      {"model.layers.{}.self_attn.o_proj.weight", {dim, dim}, true},
      {"model.layers.{}.post_attention_layernorm.weight", {dim}, true},
      {"model.layers.{}.mlp.gate_proj.weight", {hidden, dim}, true},
      {"model.layers.{}.mlp.down_proj.weight", {dim, hidden}, true},
      {"model.layers.{}.mlp.up_proj.weight", {hidden, dim}, true},
      {"model.norm.weight", {dim}, false},
      {"", {h.seq_len, head_size}, false},  // freq_cis_real and freq_cis_imag, each [seq_len, head_size / 2]
  };
  size_t offset = kHeaderBytes;
  auto take = [&](int64_t count) {
    const size_t bytes = static_cast<size_t>(count) * sizeof(float);
    Require(offset + bytes <= file.size(), "{}: the header's sizes need more than the file's {} bytes", path,
            file.size());
    const float* data = reinterpret_cast<const float*>(file.data() + offset);
    offset += bytes;
    return data;
  };
  for (const Block& block : blocks) {
    int64_t count = 1;
    for (int64_t d : block.shape) count *= d;
    for (int64_t layer = 0; layer < (block.per_layer ? layers : 1); ++layer) {
      const float* data = take(count);
      if (block.name.empty()) continue;
      std::string name = block.name;
      if (block.per_layer) name = fmt::format(fmt::runtime(block.name), layer);
      checkpoint.tensors_.push_back({name, block.shape, data});
    }
  }
  if (!h.shared_classifier) checkpoint.tensors_.push_back({"lm_head.weight", {h.vocab_size, dim}, take(h.vocab_size * dim)});
  Require(offset == file.size(), "{}: {} bytes after the weights the header describes", path, file.size() - offset);
  return checkpoint;
}

}  // namespace atq
