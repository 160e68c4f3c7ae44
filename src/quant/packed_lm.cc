// Writing atq's packed language-model folder.
#include "quant/packed_lm.h"

#include <filesystem>
#include <limits>

#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/tensor_file.h"
#include "models/gpt2.h"
#include "models/lm_gguf_writer.h"
#include "models/lm_hf_writer.h"
#include "models/lm_loader.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"
#include "util/strings.h"

namespace atq {
namespace fs = std::filesystem;
PackedLmWriter::PackedLmWriter(const LmConfig& config, std::vector<std::vector<PackedLmTensor>> groups,
                               std::string dir, const PackedLmOptions& options)
    : config_(config), groups_(std::move(groups)), dir_(std::move(dir)), options_(options) {
  Require(options.float_type == QuantType::kF16 || options.float_type == QuantType::kBF16 ||
              options.float_type == QuantType::kF32,
          "{}: unquantized tensors are stored as f16, bf16 or f32, not {}", dir_, TypeName(options.float_type));
  std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"atq.format", std::string(kPackedLmFormat)}, {"atq.recipe", options.recipe.dump()}};
  std::vector<TensorToWrite> plan;
  for (const auto& group : groups_) {
    for (const PackedLmTensor& tensor : group) {
      if (tensor.packed) {
        const Layout& layout = *tensor.packed;
        Require(layout.rows * layout.cols == CheckedElementCount(tensor.shape, tensor.name),
                "{}: packed tensor '{}' holds {}x{} weights, the model's has {}", dir_, tensor.name, layout.rows,
                layout.cols, CheckedElementCount(tensor.shape, tensor.name));
        const nlohmann::json description = {{"type", std::string(TypeName(layout.type))},
                                            {"shape", {layout.rows, layout.cols}},
                                            {"granularity", GranularityString(layout)}};
        metadata[std::string(kPackedKeyPrefix) + tensor.name] = description.dump();
        const auto bytes = static_cast<uint64_t>(PackedBytes(layout));
        plan.push_back({tensor.name, QuantType::kU8, {static_cast<int64_t>(bytes)}, nullptr, bytes});
        sizes_.packed_bytes += static_cast<int64_t>(bytes);
        if (tensor.boosted > 0) {
          const auto count = static_cast<uint64_t>(tensor.boosted);
          plan.push_back({tensor.name + kBoostedIndexSuffix, QuantType::kI32, {tensor.boosted}, nullptr, count * 4});
          plan.push_back({tensor.name + kBoostedValueSuffix, QuantType::kF16, {tensor.boosted}, nullptr, count * 2});
          sizes_.packed_bytes += static_cast<int64_t>(count * 6);
        }
      } else {
        std::vector<int64_t> shape = tensor.shape;
        // Float Conv1D weights are stored [in, out] as GPT-2's checkpoints hold them.
        if (config_.arch == LmArch::kGpt2 && IsGpt2Conv1dWeight(tensor.name)) std::reverse(shape.begin(), shape.end());
        const auto bytes = static_cast<uint64_t>(PackedBytes(LayoutForShape(options.float_type, shape)));
        plan.push_back({tensor.name, options.float_type, shape, nullptr, bytes});
        sizes_.float_bytes += static_cast<int64_t>(bytes);
      }
    }
  }
  fs::create_directories(dir_);
  weights_ = std::make_unique<ShardedSafetensorsWriter>(dir_, plan, metadata, options.max_shard_bytes);
}

PackedLmWriter::~PackedLmWriter() = default;

void PackedLmWriter::Write(const std::vector<LmTensorData>& group) {
  Require(next_group_ < groups_.size(), "{}: more tensor groups than planned", dir_);
  const std::vector<PackedLmTensor>& planned = groups_[next_group_++];
  Require(group.size() == planned.size(), "{}: a group of {} tensors, {} planned", dir_, group.size(), planned.size());
  for (size_t i = 0; i < group.size(); ++i) {
    const LmTensorData& tensor = group[i];
    const PackedLmTensor& plan = planned[i];
    Require(tensor.name == plan.name, "{}: tensor '{}' arrived where '{}' was planned", dir_, tensor.name, plan.name);
    Require((tensor.packed != nullptr) == plan.packed.has_value(), "{}: tensor '{}' was planned {} but arrived {}",
            dir_, tensor.name, plan.packed ? "packed" : "in float", tensor.packed ? "packed" : "in float");
    if (tensor.packed != nullptr) {
      Require(static_cast<int64_t>(tensor.packed->size()) == PackedBytes(*plan.packed) &&
                  tensor.packed->layout.type == plan.packed->type,
              "{}: packed tensor '{}' is {} bytes of {}, planned {} bytes of {}", dir_, tensor.name,
              tensor.packed->size(), TypeName(tensor.packed->layout.type), PackedBytes(*plan.packed),
              TypeName(plan.packed->type));
      weights_->Write(tensor.packed->data(), tensor.packed->size());
      const std::vector<int64_t>& index = tensor.packed->boosted_index;
      Require(static_cast<int64_t>(index.size()) == plan.boosted, "{}: tensor '{}' keeps {} weights exactly, {} planned",
              dir_, tensor.name, index.size(), plan.boosted);
      if (!index.empty()) {
        std::vector<int32_t> index32(index.size());
        for (size_t k = 0; k < index.size(); ++k) {
          Require(index[k] <= std::numeric_limits<int32_t>::max(), "{}: tensor '{}' is too large for RPB's int32 "
                  "indices", dir_, tensor.name);
          index32[k] = static_cast<int32_t>(index[k]);
        }
        weights_->Write(reinterpret_cast<const uint8_t*>(index32.data()), index32.size() * sizeof(int32_t));
        const torch::Tensor values = torch::from_blob(const_cast<float*>(tensor.packed->boosted_value.data()),
                                                      {static_cast<int64_t>(index.size())}, torch::kFloat32);
        const std::vector<uint8_t> bytes = FromTorch(values, QuantType::kF16);
        weights_->Write(bytes.data(), bytes.size());
      }
      continue;
    }
    torch::Tensor value = tensor.value.detach().to(torch::kCPU, torch::kFloat32);
    if (config_.arch == LmArch::kGpt2 && IsGpt2Conv1dWeight(tensor.name)) value = value.t();
    const std::vector<uint8_t> bytes = FromTorch(value.contiguous(), options_.float_type);
    weights_->Write(bytes.data(), bytes.size());
  }
}

PackedLmSizes PackedLmWriter::Commit() {
  Require(next_group_ == groups_.size(), "{}: {} of the {} tensor groups written", dir_, next_group_, groups_.size());
  weights_->Commit();
  WriteFileAtomically((fs::path(dir_) / "config.json").string(), HfConfigJson(config_).dump(2) + "\n");
  if (!options_.tokenizer_dir.empty()) CopyTokenizerFiles(options_.tokenizer_dir, dir_);
  sizes_.file_bytes = 0;
  for (const std::string& file : weights_->files()) {
    sizes_.file_bytes += static_cast<int64_t>(fs::file_size(fs::path(dir_) / file));
  }
  sizes_.files = static_cast<int64_t>(weights_->files().size());
  return sizes_;
}

std::vector<std::vector<PackedLmTensor>> PackedLmPlan(CausalLmImpl& model, const std::map<std::string, Layout>& packed,
                                                      const std::map<std::string, int64_t>& boosted) {
  const auto parameters = model.named_parameters();
  std::vector<std::vector<PackedLmTensor>> plan;
  size_t used = 0;
  for (const std::vector<std::string>& group : ParameterGroups(model)) {
    plan.emplace_back();
    for (const std::string& name : group) {
      const auto it = packed.find(name);
      std::optional<Layout> layout;
      if (it != packed.end()) {
        layout = it->second;
        ++used;
      }
      const auto count = boosted.find(name);
      plan.back().push_back({name, parameters[name].sizes().vec(), layout, count != boosted.end() ? count->second : 0});
    }
  }
  if (used != packed.size()) {
    for (const auto& [name, layout] : packed) {
      Require(parameters.contains(name), "packed tensor '{}' is not a parameter of the model", name);
    }
  }
  return plan;
}

PackedLmSizes SavePackedLm(CausalLmImpl& model, const std::map<std::string, PackedWeights>& packed,
                           const std::string& dir, const PackedLmOptions& options) {
  torch::NoGradGuard no_grad;
  std::map<std::string, Layout> layouts;
  std::map<std::string, int64_t> boosted;
  for (const auto& [name, tensor] : packed) {
    layouts.emplace(name, tensor.layout);
    if (!tensor.boosted_index.empty()) boosted.emplace(name, static_cast<int64_t>(tensor.boosted_index.size()));
  }
  PackedLmWriter writer(model.config(), PackedLmPlan(model, layouts, boosted), dir, options);
  for (const std::vector<std::string>& group : ParameterGroups(model)) writer.Write(GroupData(model, group, &packed));
  return writer.Commit();
}

}  // namespace atq
