// atq tokenize TOKENIZER (--text T | --file F | --ids 1,2,3): the ids a tokenizer gives for a text (or the text
// for ids), to hold atq's tokenizers against another tool's.
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "io/input_file.h"
#include "io/tokenizer.h"
#include "util/error.h"

namespace atq::cli {

RunFn DeclareTokenize(CLI::App& app) {
  struct Options {
    std::string tokenizer, text, file;
    std::vector<int32_t> ids;
    bool bos = false, json = false;
  };
  auto options = std::make_shared<Options>();
  app.add_option("tokenizer", options->tokenizer,
                 "tokenizer.json, tokenizer.model, encoder.json/vocab.json, a GGUF file, or a model folder")
      ->required();
  auto* text = app.add_option("--text", options->text, "Text to encode");
  auto* file = app.add_option("--file", options->file, "Encode this file's text");
  auto* ids = app.add_option("--ids", options->ids, "Decode these ids (comma-separated)")->delimiter(',');
  text->excludes(file)->excludes(ids);
  file->excludes(ids);
  app.add_flag("--bos", options->bos, "Start with BOS where the tokenizer adds one (add_bos_token)");
  app.add_flag("--json", options->json,
               "Print JSON: ids, the text they decode to, bos/eos ids, add_bos and the vocabulary size");
  return [options] {
    Require(!options->text.empty() || !options->file.empty() || !options->ids.empty(),
            "tokenize: give --text, --file or --ids");
    const std::unique_ptr<Tokenizer> tokenizer = LoadTokenizerAt(options->tokenizer);
    std::vector<int32_t> ids = options->ids;
    if (ids.empty()) {
      const std::string text = options->file.empty() ? options->text : ReadInputText(options->file);
      if (options->bos && tokenizer->add_bos() && tokenizer->bos_id() >= 0) ids.push_back(tokenizer->bos_id());
      const std::vector<int32_t> encoded = tokenizer->Encode(text);
      ids.insert(ids.end(), encoded.begin(), encoded.end());
    }
    const std::string decoded = tokenizer->Decode(ids);
    if (options->json) {
      const nlohmann::json out = {{"ids", ids},
                                  {"text", decoded},
                                  {"bos_id", tokenizer->bos_id()},
                                  {"eos_id", tokenizer->eos_id()},
                                  {"add_bos", tokenizer->add_bos()},
                                  {"vocab_size", tokenizer->vocab_size()}};
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else if (options->ids.empty()) {
      std::cout << fmt::format("{}\n", fmt::join(ids, " "));
    } else {
      std::cout << decoded << "\n";
    }
    return 0;
  };
}

}  // namespace atq::cli
