// atq logits MODEL (--ids-from FILE.safetensors[:TENSOR] | --ids 1,2,3 | --text T) --out F.safetensors: the
// float32 logits of every position ([batch, positions, vocab], batch rows as the input has them), so atq can be
// held against any other tool's logits.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "command.h"
#include "io/output_path.h"
#include "io/safetensors.h"
#include "io/tensor_file.h"
#include "torch/tensor_bridge.h"
#include "torch_lm_options.h"
#include "util/error.h"

namespace atq::cli {

RunFn DeclareLogits(CLI::App& app) {
  struct Options {
    LmCliOptions lm;
    std::string ids_from;
    std::vector<int64_t> ids;
    std::string text;
    std::string out;
  };
  auto o = std::make_shared<Options>();
  AddLmOptions(app, o->lm);
  AddLmRuntimeOption(app, o->lm);
  auto* from = app.add_option("--ids-from", o->ids_from,
                              "Token ids from a safetensors file, FILE or FILE:TENSOR (integer tensor [T] or [B, T]; "
                              "default tensor input_ids)");
  auto* ids = app.add_option("--ids", o->ids, "Token ids, comma-separated (one row)")->delimiter(',');
  auto* text = app.add_option("--text", o->text, "Text, tokenized by the model's tokenizer (one row, no BOS)");
  from->excludes(ids)->excludes(text);
  ids->excludes(text);
  app.add_option("--out", o->out, "Output safetensors file: logits F32 [B, T, vocab] and input_ids I64 [B, T]")
      ->required();
  return [o] {
    Require(!o->ids_from.empty() || !o->ids.empty() || !o->text.empty(),
            "give the tokens with --ids-from, --ids or --text");
    std::string ids_file = o->ids_from, tensor_name = "input_ids";
    if (const size_t colon = o->ids_from.rfind(':');
        colon != std::string::npos && !std::filesystem::exists(o->ids_from)) {
      ids_file = o->ids_from.substr(0, colon);
      tensor_name = o->ids_from.substr(colon + 1);
    }
    CheckOutputPath(o->out, {o->lm.model, o->lm.tokenizer, ids_file}, "--out");
    const LanguageModel lm = LoadLmFromCli(o->lm);
    torch::Tensor ids;
    if (!o->ids_from.empty()) {
      const TensorFile file = TensorFile::Open(ids_file);
      const TensorEntry* entry = file.Find(tensor_name);
      Require(entry != nullptr, "{}: no tensor '{}'", ids_file, tensor_name);
      Require(Traits(entry->info->type).family == TypeFamily::kInteger &&
                  (entry->info->shape.size() == 1 || entry->info->shape.size() == 2),
              "{}: tensor '{}' must hold integer ids [T] or [B, T], not {} {}", ids_file, tensor_name,
              TypeName(entry->info->type), ShapeString(entry->info->shape));
      ids = ToTorch(*entry->info, entry->data).to(torch::kInt64);
      if (ids.dim() == 1) ids = ids.unsqueeze(0);
    } else if (!o->ids.empty()) {
      ids = torch::tensor(o->ids, torch::kInt64).unsqueeze(0);
    } else {
      Require(lm.tokenizer != nullptr, "{}: no tokenizer for --text; give one with --tokenizer", o->lm.model);
      const std::vector<int32_t> tokens = lm.tokenizer->Encode(o->text);
      Require(!tokens.empty(), "--text gives no tokens");
      ids = torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), torch::kInt64).unsqueeze(0);
    }
    const int64_t vocab = lm.model->config().vocab_size;
    Require(ids.numel() > 0, "no token ids given");
    Require(ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < vocab,
            "token ids must lie in [0, {}) (the model's vocabulary); got {} .. {}", vocab, ids.min().item<int64_t>(),
            ids.max().item<int64_t>());
    Require(ids.size(1) <= UsableContext(lm.model->config()), "{} positions, more than the model's context of {}",
            ids.size(1), UsableContext(lm.model->config()));
    torch::NoGradGuard no_grad;
    const torch::Tensor logits = lm.model->forward(ids).to(torch::kCPU, torch::kFloat32).contiguous();
    const torch::Tensor ids_out = ids.contiguous();
    WriteSafetensors(o->out,
                     {{"input_ids", QuantType::kI64, ids_out.sizes().vec(),
                       reinterpret_cast<const uint8_t*>(ids_out.data_ptr()),
                       static_cast<uint64_t>(ids_out.numel() * 8)},
                      {"logits", QuantType::kF32, logits.sizes().vec(),
                       reinterpret_cast<const uint8_t*>(logits.data_ptr()),
                       static_cast<uint64_t>(logits.numel() * 4)}},
                     {{"model", lm.Describe().dump()}});
    fmt::print("logits [{}, {}, {}] of {} -> {}\n", logits.size(0), logits.size(1), logits.size(2), o->lm.model, o->out);
    return 0;
  };
}

}  // namespace atq::cli
