// Synthetic checkpoints with the exact config, tensor names, shapes, dtype and sharding of real models and seeded
// random weights of realistic scale (per-layer widths, a few outlier input channels), so tests and benchmarks
// get 1-8 B models without downloading them. Written tensor by tensor: memory stays at one chunk, not the model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/quant_type.h"

namespace atq {

struct SynthOptions {
  std::string like;         // a preset of LmSynthPresets(), or "" with `config`
  std::string config;       // a config.json of any rotary family
  std::string out;          // the folder
  QuantType dtype = QuantType::kBF16;  // f32, f16 or bf16
  int64_t shard_bytes = 0;  // largest shard; 0: the preset's own sharding (5 GB for a config)
  int64_t layers = 0;       // fewer layers than the model has (0: all), for smaller runs of the same shapes
  uint64_t seed = 0;
  std::string tokenizer;    // a tokenizer folder copied in; "" picks the preset's from the set-up's data if there
};

struct SynthPreset {
  std::string_view name;
  std::string_view config_json;  // the published config.json's keys that shape the model
  int64_t shard_bytes;           // the published checkpoint's shard size (0: one file)
  std::string_view tokenizer;    // the data/npm tokenizer of that vocabulary size, "" for none
};
const std::vector<SynthPreset>& LmSynthPresets();

struct SynthReport {
  std::vector<std::string> files;  // shards in order
  int64_t tensors = 0, parameters = 0, bytes = 0;
  double seconds = 0;
};

// Writes config.json, the shards (model.safetensors, or model-0000i-of-0000N.safetensors with
// model.safetensors.index.json) and tokenizer files into `out`, under a staging folder renamed at the end. The
// same options give the same bytes. Throws atq::Error naming the preset, file or setting at fault.
SynthReport SynthesizeCheckpoint(const SynthOptions& options);

}  // namespace atq
