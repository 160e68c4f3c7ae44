// atq convert MODEL (--gguf F [--type T] | --hf DIR): a model of any family in another container, unquantized or
// with one llama.cpp type for every linear layer, as llama.cpp's converter (convert_hf_to_gguf.py --outtype) or
// transformers' save_pretrained would write it.
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "io/atomic_file.h"
#include "io/output_path.h"
#include "models/lm_gguf_writer.h"
#include "models/lm_hf_writer.h"
#include "torch_lm_options.h"
#include "util/error.h"

namespace atq::cli {

RunFn DeclareConvert(CLI::App& app) {
  struct Options {
    LmCliOptions lm;
    std::string gguf, hf, type = "f16", embeddings;
  };
  auto o = std::make_shared<Options>();
  AddLmOptions(app, o->lm);
  auto* gguf = app.add_option("--gguf", o->gguf, "Write a llama.cpp GGUF file here");
  auto* hf = app.add_option("--hf", o->hf, "Write a Hugging Face folder (config.json, float32 model.safetensors) here");
  gguf->excludes(hf);
  app.add_option("--type", o->type, "GGUF type of the linear layers: f32, f16, bf16, q8_0, q4_0, tq2_0, tq1_0")
      ->capture_default_str();
  app.add_option("--embeddings", o->embeddings, "GGUF type of the token embedding and an untied head (default: --type)");
  return [o] {
    if (o->gguf.empty() && o->hf.empty()) throw UsageError("convert: give --gguf FILE or --hf DIR");
    const auto type_of = [](const std::string& name, const char* flag) {
      const auto type = ParseQuantType(name);
      if (!type) throw UsageError(fmt::format("{} {}: not a format of `atq formats`", flag, name));
      return *type;
    };
    LmGgufOptions gguf_options;
    gguf_options.linear_type = type_of(o->type, "--type");
    gguf_options.embedding_type = o->embeddings.empty() ? gguf_options.linear_type : type_of(o->embeddings, "--embeddings");
    // Rows too short for a block type fall back to q8_0, else f16, as llama-quantize does.
    gguf_options.fallback_type = Traits(gguf_options.linear_type).is_quantized ? QuantType::kQ8_0 : gguf_options.linear_type;
    const std::vector<std::string> inputs = {o->lm.model, o->lm.tokenizer};
    const std::string& out = o->gguf.empty() ? o->hf : o->gguf;
    CheckOutputPath(out, inputs, o->gguf.empty() ? "--hf" : "--gguf");
    if (!o->hf.empty()) StagedFolder::CheckReplaceable(o->hf, "config.json", "--hf");
    o->lm.dequantize = true;  // the float weights are what is converted
    o->lm.deferred = !o->gguf.empty();  // a GGUF is written a block at a time, read from the mapped input
    LanguageModel lm = LoadLmFromCli(o->lm);
    namespace fs = std::filesystem;
    const std::string tokenizer_dir = fs::is_directory(lm.tokenizer_source) ? lm.tokenizer_source : "";
    if (!o->gguf.empty()) {
      CheckGgufWritable(lm.model->config(), o->gguf);
      Require(!tokenizer_dir.empty(),
              "{}: a GGUF needs the model's vocabulary from a tokenizer folder (tokenizer.json, or GPT-2's BPE files); "
              "this model's tokenizer came from '{}'; give one with --tokenizer",
              o->lm.model, lm.tokenizer_source);
      const LmGgufReport report =
          WriteLmGguf(*lm.model, tokenizer_dir, gguf_options, o->gguf, /*packed=*/nullptr, lm.weights.get());
      int64_t fallbacks = 0;
      for (const LmGgufTensorReport& tensor : report.tensors) {
        if (tensor.fallback_reason.empty()) continue;
        ++fallbacks;
        fmt::print("gguf: {}: {}\n", tensor.gguf_name, tensor.fallback_reason);
      }
      fmt::print("{}: {} tensors ({} in a fallback type), {:.2f} MB, {} {}\n", o->gguf, report.tensors.size(), fallbacks,
                 report.file_bytes / 1e6, lm.model->config().family.empty() ? "" : lm.model->config().family,
                 o->type);
    } else {
      StagedFolder staged(o->hf, "config.json");
      SaveHuggingFace(*lm.model, staged.path());
      if (!tokenizer_dir.empty()) CopyTokenizerFiles(tokenizer_dir, staged.path());
      staged.Commit();
      fmt::print("{}: Hugging Face folder written\n", o->hf);
    }
    return 0;
  };
}

}  // namespace atq::cli
