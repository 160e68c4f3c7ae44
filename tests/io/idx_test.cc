// IDX reader: hand-built plain and gzip files, hostile ones (bad magic, truncated, lying dims, count mismatch),
// and the real Fashion-MNIST files when the machine has them.
#include "io/idx.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

using testutil::TempDir;
using testutil::WriteFileBytes;

void AppendBigEndian32(std::vector<uint8_t>& bytes, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(value >> shift));
}

std::vector<uint8_t> IdxBytes(uint32_t magic, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes;
  AppendBigEndian32(bytes, magic);
  for (const uint32_t dim : dims) AppendBigEndian32(bytes, dim);
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

void WriteGzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(file), Z_OK);
}

// 3 images of 2x4 pixels with values 0..23, labels 7, 0, 9.
std::vector<uint8_t> TinyPixels() {
  std::vector<uint8_t> pixels(3 * 2 * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i);
  return pixels;
}
const std::vector<uint8_t> kTinyLabels = {7, 0, 9};

void WriteTinySet(const TempDir& dir, const std::string& prefix, bool gzip) {
  const std::vector<uint8_t> images = IdxBytes(0x803, {3, 2, 4}, TinyPixels());
  const std::vector<uint8_t> labels = IdxBytes(0x801, {3}, kTinyLabels);
  if (gzip) {
    WriteGzip(dir.File(prefix + "-images-idx3-ubyte.gz"), images);
    WriteGzip(dir.File(prefix + "-labels-idx1-ubyte.gz"), labels);
  } else {
    WriteFileBytes(dir.File(prefix + "-images-idx3-ubyte"), images);
    WriteFileBytes(dir.File(prefix + "-labels-idx1-ubyte"), labels);
  }
}

// Runs `body`, expecting an atq::Error whose message contains every one of `parts`.
template <typename Body>
void ExpectError(Body body, const std::vector<std::string>& parts) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one mentioning " << parts.front();
  } catch (const Error& error) {
    const std::string message = error.what();
    for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
  }
}

TEST(Idx, ReadsPlainFiles) {
  TempDir dir;
  WriteTinySet(dir, "train", /*gzip=*/false);
  const ImageSet set = LoadIdxDataset(dir.path(), /*train=*/true);
  EXPECT_EQ(set.count, 3);
  EXPECT_EQ(set.rows, 2);
  EXPECT_EQ(set.cols, 4);
  EXPECT_EQ(set.pixels, TinyPixels());
  EXPECT_EQ(set.labels, kTinyLabels);
}

TEST(Idx, ReadsGzipFiles) {
  TempDir dir;
  WriteTinySet(dir, "t10k", /*gzip=*/true);
  const ImageSet set = LoadIdxDataset(dir.path(), /*train=*/false);
  EXPECT_EQ(set.count, 3);
  EXPECT_EQ(set.rows, 2);
  EXPECT_EQ(set.cols, 4);
  EXPECT_EQ(set.pixels, TinyPixels());
  EXPECT_EQ(set.labels, kTinyLabels);
}

TEST(Idx, FindsDottedMirrorNames) {
  TempDir dir;
  WriteFileBytes(dir.File("train-images.idx3-ubyte"), IdxBytes(0x803, {3, 2, 4}, TinyPixels()));
  WriteGzip(dir.File("train-labels.idx1-ubyte.gz"), IdxBytes(0x801, {3}, kTinyLabels));
  EXPECT_EQ(LoadIdxDataset(dir.path(), true).labels, kTinyLabels);
}

TEST(Idx, MissingFolderAndFilesAreNamed) {
  TempDir dir;
  ExpectError([&] { LoadIdxDataset(dir.File("nowhere"), true); }, {"nowhere", "no such data folder"});
  ExpectError([&] { LoadIdxDataset(dir.path(), true); }, {dir.path(), "train-images-idx3-ubyte"});
  WriteTinySet(dir, "train", false);
  ExpectError([&] { LoadIdxDataset(dir.path(), false); }, {"t10k-images-idx3-ubyte"});
  std::filesystem::remove(dir.File("train-labels-idx1-ubyte"));
  ExpectError([&] { LoadIdxDataset(dir.path(), true); }, {"train-labels-idx1-ubyte"});
}

TEST(Idx, BadMagicIsRejected) {
  TempDir dir;
  const std::string path = dir.File("images");
  WriteFileBytes(path, IdxBytes(0x12345678, {3, 2, 4}, TinyPixels()));
  ExpectError([&] { ReadIdxFile(path, 3); }, {path, "not an IDX file"});
  // A labels file where images belong: right format, wrong rank.
  WriteFileBytes(path, IdxBytes(0x801, {3}, kTinyLabels));
  ExpectError([&] { ReadIdxFile(path, 3); }, {path, "rank 1", "0x00000803"});
  // Floats (type 0x0D) are not what atq reads.
  WriteFileBytes(path, IdxBytes(0xD03, {1, 1, 1}, {0, 0, 0, 0}));
  ExpectError([&] { ReadIdxFile(path, 3); }, {path, "element type 0x0d"});
}

TEST(Idx, TruncatedFilesAreRejected) {
  TempDir dir;
  const std::string path = dir.File("images");
  const std::vector<uint8_t> full = IdxBytes(0x803, {3, 2, 4}, TinyPixels());
  for (const size_t keep : {size_t{0}, size_t{3}, size_t{10}, full.size() - 1}) {
    const std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(keep));
    WriteFileBytes(path, cut);
    ExpectError([&] { ReadIdxFile(path, 3); }, {path, "truncated"});
    WriteGzip(path + ".gz", cut);
    ExpectError([&] { ReadIdxFile(path + ".gz", 3); }, {path + ".gz", "truncated"});
  }
}

TEST(Idx, TrailingDataIsRejected) {
  TempDir dir;
  const std::string path = dir.File("labels");
  std::vector<uint8_t> bytes = IdxBytes(0x801, {3}, kTinyLabels);
  bytes.push_back(1);
  WriteFileBytes(path, bytes);
  ExpectError([&] { ReadIdxFile(path, 1); }, {path, "after the data"});
  WriteGzip(path + ".gz", bytes);
  ExpectError([&] { ReadIdxFile(path + ".gz", 1); }, {path + ".gz", "more data"});
}

TEST(Idx, LyingDimensionsAreRefusedBeforeAllocating) {
  TempDir dir;
  const std::string path = dir.File("images");
  // 4 billion images of 4096x4096 in a few bytes: refused from the header alone.
  WriteFileBytes(path, IdxBytes(0x803, {0xFFFFFFFFu, 4096, 4096}, {1, 2, 3}));
  ExpectError([&] { ReadIdxFile(path, 3); }, {path, "claims more than"});
  // Within the cap, but far more than a small gzip file can decompress to.
  WriteGzip(path + ".gz", IdxBytes(0x803, {1000000, 28, 28}, {1, 2, 3}));
  ExpectError([&] { ReadIdxFile(path + ".gz", 3); }, {path + ".gz", "more than", "gzip data can hold"});
  WriteFileBytes(path, IdxBytes(0x803, {3, 0, 4}, {}));
  ExpectError([&] { ReadIdxFile(path, 3); }, {path, "dimension 1 is 0"});
}

TEST(Idx, CorruptGzipIsRejected) {
  TempDir dir;
  const std::string path = dir.File("images.gz");
  WriteGzip(path, IdxBytes(0x803, {3, 2, 4}, TinyPixels()));
  std::vector<uint8_t> bytes = testutil::ReadFileBytes(path);
  // Flip bits in the deflate stream (after the 10-byte gzip header) and in the CRC trailer.
  for (size_t i = 12; i < bytes.size(); i += 3) bytes[i] ^= 0x5A;
  WriteFileBytes(path, bytes);
  ExpectError([&] { ReadIdxFile(path, 3); }, {path});
}

TEST(Idx, CountMismatchNamesBothFiles) {
  TempDir dir;
  WriteFileBytes(dir.File("train-images-idx3-ubyte"), IdxBytes(0x803, {3, 2, 4}, TinyPixels()));
  WriteFileBytes(dir.File("train-labels-idx1-ubyte"), IdxBytes(0x801, {2}, {1, 2}));
  ExpectError([&] { LoadIdxDataset(dir.path(), true); },
              {"train-labels-idx1-ubyte", "2 labels", "train-images-idx3-ubyte", "3 images"});
}

// The real thing, where the machine has it: /usr/share/datasets/fashion-mnist (or $ATQ_FASHION_MNIST).
std::string FashionMnistDir() {
  if (const char* env = std::getenv("ATQ_FASHION_MNIST"); env != nullptr && *env != '\0') return env;
  return "/usr/share/datasets/fashion-mnist";
}

TEST(Idx, RealFashionMnist) {
  const std::string dir = FashionMnistDir();
  std::error_code error;
  if (!std::filesystem::exists(std::filesystem::path(dir) / "t10k-labels-idx1-ubyte.gz", error)) {
    GTEST_SKIP() << "Fashion-MNIST not found at " << dir << " (set ATQ_FASHION_MNIST)";
  }
  for (const bool train : {true, false}) {
    const ImageSet set = LoadIdxDataset(dir, train);
    EXPECT_EQ(set.count, train ? 60000 : 10000);
    EXPECT_EQ(set.rows, 28);
    EXPECT_EQ(set.cols, 28);
    ASSERT_EQ(set.pixels.size(), static_cast<size_t>(set.count * 28 * 28));
    ASSERT_EQ(set.labels.size(), static_cast<size_t>(set.count));
    std::vector<int64_t> per_class(10, 0);
    for (const uint8_t label : set.labels) {
      ASSERT_LT(label, 10);
      ++per_class[label];
    }
    // Fashion-MNIST is exactly balanced.
    for (const int64_t n : per_class) EXPECT_EQ(n, set.count / 10);
  }
}

}  // namespace
}  // namespace atq
