// Hugging Face folder writer.
#include "models/lm_hf_writer.h"

#include <filesystem>

#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "models/gpt2.h"
#include "models/lm_family.h"
#include "util/error.h"

namespace atq {
namespace fs = std::filesystem;

std::vector<std::pair<std::string, torch::Tensor>> HuggingFaceTensors(const CausalLmImpl& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model.named_parameters()) {
    torch::Tensor value = p.value().detach().to(torch::kCPU, torch::kFloat32);
    if (model.config().arch == LmArch::kGpt2 && IsGpt2Conv1dWeight(p.key())) value = value.t();
    out.emplace_back(p.key(), value.contiguous());
  }
  return out;
}

void CopyTokenizerFiles(const std::string& from_dir, const std::string& to_dir) {
  const fs::path from(from_dir);
  std::vector<std::pair<std::string, std::string>> files;
  if (fs::exists(from / "tokenizer.json")) {
    files = {{"tokenizer.json", "tokenizer.json"}};
  } else if (fs::exists(from / "encoder.json")) {
    files = {{"encoder.json", "vocab.json"}, {"vocab.bpe", "merges.txt"}};
  } else if (fs::exists(from / "vocab.json")) {
    files = {{"vocab.json", "vocab.json"}, {"merges.txt", "merges.txt"}};
  } else if (fs::exists(from / "tokenizer.model")) {
    files = {{"tokenizer.model", "tokenizer.model"}};
  } else {
    Fail("{}: no tokenizer files to copy (tokenizer.json, encoder.json + vocab.bpe, vocab.json + merges.txt or "
         "tokenizer.model)",
         from_dir);
  }
  // BOS/EOS, add_bos_token and the chat template go with any of them.
  if (fs::exists(from / "tokenizer_config.json")) files.emplace_back("tokenizer_config.json", "tokenizer_config.json");
  for (const auto& [source_name, target_name] : files) {
    const fs::path source = from / source_name;
    Require(fs::exists(source), "{}: missing (tokenizer files)", source.string());
    const fs::path target = fs::path(to_dir) / target_name;
    const fs::path temporary = target.string() + ".tmp";
    fs::copy_file(source, temporary, fs::copy_options::overwrite_existing);
    fs::rename(temporary, target);
  }
}

void SaveHuggingFace(const CausalLmImpl& model, const std::string& dir, const std::string& gpt2_tokenizer_dir) {
  fs::create_directories(dir);
  auto tensors = HuggingFaceTensors(model);
  // Fused as the family's checkpoints are (Phi-3's qkv_proj, gate_up_proj), so transformers loads the folder.
  if (const auto fuse = FamilyOf(model.config()).fuse_for_checkpoint) fuse(tensors);
  std::vector<TensorToWrite> to_write;
  for (const auto& [name, value] : tensors) {
    to_write.push_back({name, QuantType::kF32, value.sizes().vec(), static_cast<const uint8_t*>(value.data_ptr()),
                        static_cast<uint64_t>(value.numel()) * sizeof(float)});
  }
  WriteSafetensors((fs::path(dir) / "model.safetensors").string(), to_write, {{"format", "pt"}});
  WriteFileAtomically((fs::path(dir) / "config.json").string(), HfConfigJson(model.config()).dump(2) + "\n");
  if (!gpt2_tokenizer_dir.empty()) CopyTokenizerFiles(gpt2_tokenizer_dir, dir);
}

}  // namespace atq
