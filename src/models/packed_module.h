// Any module whose weight layers are QuantWeightLayers as a packed safetensors file: each ternary layer's weight as
// atq's t2 (2 bits) or t1.6 (1.6 bits) codes with float32 scales, RPB residuals as (int32 index, f16 value)
// pairs, every other parameter and buffer float32 by its torch name. Packed tensors are U8 byte strings whose
// layout is in the file's metadata:
//
//   <layer>.weight              U8 [packed bytes]   metadata "atq.packed.<layer>.weight" = {"type","shape",
//                                                   "granularity"}
//   <layer>.weight.rpb_index    I32 [n]             flat positions kept exactly (RPB), when n > 0
//   <layer>.weight.rpb_value    F16 [n]             their values
//   every other parameter and buffer                F32, by its torch name
//   metadata "atq.format"       the caller's format name (e.g. "atq-packed-classifier/1"), plus the caller's keys
//
// The model kinds (classifiers, the image-text model) add their format name and config on top.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include "formats/quant_type.h"
#include "io/safetensors.h"
#include "models/classifier.h"
#include "models/packed_product.h"

namespace atq {

inline constexpr const char* kPackedFormatKey = "atq.format";
// The model kind's config.json, kept in the packed file so that it builds the model alone.
inline constexpr const char* kPackedConfigKey = "atq.config";

// Packs every ternary layer of `layers` (parameter paths within `module`) as `type` (kTernary2 or kTernary1_6):
// the codes and scales the layer's own configuration gives. Writes `path` atomically with `metadata` (which must
// hold kPackedFormatKey) and returns the bytes written. Throws atq::Error for other types or when no layer is
// ternary.
int64_t WritePackedModule(torch::nn::Module& module, const NamedQuantLayers& layers, QuantType type,
                          const std::map<std::string, std::string>& metadata, const std::string& path);

// The format name `path` declares, or "" when it is not a safetensors file with one.
std::string PackedFormatOf(const std::string& path);

// The config (metadata kPackedConfigKey, parsed) of `file` at `path`, after checking that its format name is
// `format`. Throws atq::Error naming `path` otherwise.
nlohmann::json ReadPackedConfig(const SafetensorsFile& file, const std::string& path, const std::string& format);

// A whole model as one packed file: WritePackedModule with metadata kPackedFormatKey = `format` and
// kPackedConfigKey = `config` (what the model's config.json holds) with `extra`'s keys added.
int64_t WritePackedModel(torch::nn::Module& module, const NamedQuantLayers& layers, QuantType type,
                         const std::string& format, nlohmann::json config, const nlohmann::json& extra,
                         const std::string& path);

// Fills `module` (built with the right shapes) from `file`: packed weights are attached to their layers, which run
// as `run` says (atq's kernels, or dequantized so the forward pass equals the fake-quantized model's) and report
// a ternary configuration; everything else is copied. Throws atq::Error naming `path` and the tensor at fault.
void ReadPackedModule(const SafetensorsFile& file, const std::string& path, torch::nn::Module& module,
                      const NamedQuantLayers& layers, PackedRun run);

// The model a packed file of `format` at `path` holds: build(config, what) makes it from the file's config (`what`
// names the metadata for errors), ReadPackedModule fills it, its packed layers run as `run` says; in evaluation
// mode. `config_json` (when given) receives the config. Holder is a torch::nn::ModuleHolder with QuantLayers().
template <typename Holder, typename Build>
Holder LoadPackedModel(const std::string& path, const std::string& format, PackedRun run, Build build,
                       nlohmann::json* config_json) {
  const SafetensorsFile file = SafetensorsFile::Open(path);
  nlohmann::json config = ReadPackedConfig(file, path, format);
  Holder model = build(config, path + " " + kPackedConfigKey);
  ReadPackedModule(file, path, *model, model->QuantLayers(), run);
  model->eval();
  if (config_json != nullptr) *config_json = std::move(config);
  return model;
}

}  // namespace atq
