// Where the image-text commands (train-image-text, eval-image-text) find their images, captions and tokenizer.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace atq::cli {

struct ImageTextDataFlags {
  std::string data_dir, caption_file, tokenizer_dir;
  // The project's defaults for what was not given.
  void Resolve();
  std::vector<std::string> Inputs() const { return {data_dir, caption_file, tokenizer_dir}; }
};

// --data --captions --tokenizer
void AddImageTextDataFlags(CLI::App& app, ImageTextDataFlags& flags);

}  // namespace atq::cli
