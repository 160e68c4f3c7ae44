// safetensors: round trips, the exact bytes the Rust/Python library writes, hostile headers, real fixtures.
#include "io/safetensors.h"

#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "io/mapped_file.h"
#include "util/error.h"

namespace atq {
namespace {

using testutil::ReadFileBytes;
using testutil::TempDir;
using testutil::WriteFileBytes;

// memcmp that also accepts the null pointers of empty buffers.
bool SameBytes(const void* a, const void* b, size_t count) { return count == 0 || std::memcmp(a, b, count) == 0; }

const std::vector<std::string> kAllDtypes = {"F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL"};

// A file as the Python library lays it out: 8-byte little-endian header length, JSON, data. The header is
// padded with spaces to a multiple of 8 unless `pad` is false; `length` overrides the stored length.
std::vector<uint8_t> MakeFile(std::string header, const std::vector<uint8_t>& data = {}, bool pad = true,
                              std::optional<uint64_t> length = std::nullopt) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  const uint64_t stored = length.value_or(header.size());
  std::vector<uint8_t> bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<uint8_t>(stored >> (8 * i)));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

std::vector<uint8_t> RandomBytes(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(count);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  return bytes;
}

constexpr const char* kHostileName = "hostile.safetensors";

// The atq::Error message FromBytes gives for `bytes`; fails the test on success or on any other exception.
std::string ParseError(const std::vector<uint8_t>& bytes) {
  return testutil::ErrorMessageOf([&] { SafetensorsFile::FromBytes(kHostileName, bytes); });
}

// Every message names the file and the specific problem.
void ExpectParseError(const std::vector<uint8_t>& bytes, const std::vector<std::string>& needles) {
  testutil::ExpectErrorNaming(ParseError(bytes), kHostileName, needles);
}

std::string WriteError(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  try {
    WriteSafetensors(path, tensors);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected atq::Error from the writer";
  return "";
}

// ---- round trips and exact bytes ----

TEST(SafetensorsTest, RoundTripsEveryDtypeWithMetadata) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{3, 5}, {}, {0, 4}, {2, 1, 3}, {7}};
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < kAllDtypes.size(); ++i) {
    const std::optional<QuantType> type = ParseSafetensorsDtype(kAllDtypes[i]);
    ASSERT_TRUE(type.has_value()) << kAllDtypes[i];
    EXPECT_EQ(SafetensorsDtypeName(*type), kAllDtypes[i]);
    const std::vector<int64_t>& shape = shapes[i % shapes.size()];
    const uint64_t nbytes = CheckedElementCount(shape, "test") * Traits(*type).bytes_per_block;
    payloads.push_back(RandomBytes(nbytes, static_cast<uint32_t>(i)));
    tensors.push_back({"tensor." + kAllDtypes[i], *type, shape, payloads.back().data(), nbytes});
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"atq.note", "ünïcödé \"quoted\"\n"}};
  const std::string path = dir.File("all.safetensors");
  WriteSafetensors(path, tensors, metadata);

  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.path(), path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& info = file.tensors()[i];  // file order is the order written
    EXPECT_EQ(info.name, tensors[i].name);
    EXPECT_EQ(info.type, tensors[i].type);
    EXPECT_EQ(info.shape, tensors[i].shape);
    EXPECT_EQ(info.nbytes, tensors[i].nbytes);
    EXPECT_EQ(file.Find(info.name), &info);
    EXPECT_TRUE(SameBytes(file.Data(info), payloads[i].data(), info.nbytes)) << info.name;
  }
  EXPECT_EQ(file.Find("no.such.tensor"), nullptr);

  // The in-memory parser sees the same thing.
  const SafetensorsFile copy = SafetensorsFile::FromBytes("copy", ReadFileBytes(path));
  ASSERT_EQ(copy.tensors().size(), tensors.size());
  EXPECT_EQ(copy.data_offset(), file.data_offset());
  EXPECT_EQ(copy.metadata(), metadata);
}

TEST(SafetensorsTest, HeaderIsCompactJsonPaddedWithSpacesToEightBytes) {
  TempDir dir;
  const float values[2] = {1.0f, -2.0f};
  const std::string path = dir.File("small.safetensors");
  WriteSafetensors(path, {{"a", QuantType::kF32, {2}, reinterpret_cast<const uint8_t*>(values), 8}}, {{"k", "v"}});

  const std::vector<uint8_t> bytes = ReadFileBytes(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[i];
  EXPECT_EQ(header_length % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + header_length + 8);
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + header_length);
  // What the Rust library writes for the same tensor: __metadata__ first, compact JSON, then spaces.
  const std::string json = R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(header.substr(0, json.size()), json);
  EXPECT_EQ(header.substr(json.size()), std::string(header_length - json.size(), ' '));
  EXPECT_TRUE(SameBytes(bytes.data() + 8 + header_length, values, 8));
  EXPECT_EQ(SafetensorsFile::Open(path).data_offset() % 8, 0u);
}

TEST(SafetensorsTest, ReadsHandBuiltFileInOffsetOrder) {
  // Built byte by byte as the Python library would; the JSON lists "b" first but "a" comes first in the data.
  const int32_t ints[2] = {7, -9};
  std::vector<uint8_t> data(2);
  data[0] = 0x00;  // f16 1.0 = 0x3C00, little-endian
  data[1] = 0x3C;
  data.insert(data.end(), reinterpret_cast<const uint8_t*>(ints), reinterpret_cast<const uint8_t*>(ints) + 8);
  const std::vector<uint8_t> bytes =
      MakeFile(R"({"b":{"dtype":"I32","shape":[2],"data_offsets":[2,10]},)"
               R"("a":{"dtype":"F16","shape":[],"data_offsets":[0,2]},"__metadata__":{"format":"pt"}})",
               data);
  const SafetensorsFile file = SafetensorsFile::FromBytes("hand.safetensors", bytes);
  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.tensors()[0].name, "a");
  EXPECT_EQ(file.tensors()[1].name, "b");
  EXPECT_EQ(file.metadata().at("format"), "pt");
  const TensorInfo* a = file.Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type, QuantType::kF16);
  EXPECT_TRUE(a->shape.empty());
  EXPECT_EQ(a->layout.rows, 1);
  EXPECT_EQ(a->layout.cols, 1);
  EXPECT_EQ(file.Data(*a)[1], 0x3C);
  const TensorInfo* b = file.Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, QuantType::kI32);
  int32_t read[2];
  std::memcpy(read, file.Data(*b), 8);
  EXPECT_EQ(read[0], 7);
  EXPECT_EQ(read[1], -9);
}

TEST(SafetensorsTest, AcceptsHolesEmptyTensorsAndUnpaddedHeaders) {
  // Holes between tensors and trailing bytes are allowed by the spec; an empty tensor occupies no bytes.
  const std::vector<uint8_t> bytes =
      MakeFile(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("empty":{"dtype":"F32","shape":[0,3],"data_offsets":[2,2]},)"
               R"("b":{"dtype":"U8","shape":[2,2],"data_offsets":[8,12]}})",
               RandomBytes(16, 1), /*pad=*/false);
  const SafetensorsFile file = SafetensorsFile::FromBytes("holes.safetensors", bytes);
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.tensors()[0].name, "a");
  EXPECT_EQ(file.tensors()[1].name, "empty");
  EXPECT_EQ(file.tensors()[1].nbytes, 0u);
  EXPECT_EQ(file.tensors()[2].name, "b");

  const SafetensorsFile empty = SafetensorsFile::FromBytes("empty.safetensors", MakeFile("{}"));
  EXPECT_TRUE(empty.tensors().empty());
  EXPECT_TRUE(empty.metadata().empty());
}

TEST(SafetensorsTest, DataRejectsTensorFromAnotherFile) {
  const SafetensorsFile file = SafetensorsFile::FromBytes(
      "one.safetensors", MakeFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", {42}));
  TensorInfo foreign = file.tensors()[0];
  foreign.offset = 1000;
  EXPECT_THROW(file.Data(foreign), Error);
}

TEST(SafetensorsTest, OpenNamesMissingFile) {
  try {
    SafetensorsFile::Open("/nonexistent/dir/missing.safetensors");
    FAIL() << "opened a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos) << e.what();
  }
}

// The fuzzer's seeds stay valid files, so fuzzing starts from inputs that reach the deep checks.
TEST(SafetensorsTest, FuzzSeedCorpusParses) {
#ifdef ATQ_SOURCE_DIR
  const std::filesystem::path corpus = std::filesystem::path(ATQ_SOURCE_DIR) / "fuzz" / "corpus" / "safetensors";
  if (!std::filesystem::is_directory(corpus)) GTEST_SKIP() << corpus << " not found";
  int seeds = 0;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    EXPECT_NO_THROW(SafetensorsFile::Open(entry.path().string())) << entry.path();
    ++seeds;
  }
  EXPECT_GE(seeds, 5);
#else
  GTEST_SKIP() << "ATQ_SOURCE_DIR not defined";
#endif
}

// ---- the writer refuses bad input and never leaves a file behind ----

TEST(SafetensorsWriterTest, RejectsBadTensorsWithoutCreatingFiles) {
  TempDir dir;
  const std::string path = dir.File("out.safetensors");
  const std::vector<uint8_t> bytes(64);
  const uint8_t* data = bytes.data();

  std::string message = WriteError(path, {{"w", QuantType::kTernary2, {4, 4}, data, 4}});
  EXPECT_NE(message.find("'w'"), std::string::npos) << message;
  EXPECT_NE(message.find("U8"), std::string::npos) << message;
  EXPECT_NE(message.find("metadata"), std::string::npos) << message;

  message = WriteError(path, {{"q", QuantType::kQ4_0, {1, 32}, data, 18}});
  EXPECT_NE(message.find("q4_0 has no safetensors dtype"), std::string::npos) << message;

  message = WriteError(path, {{"a", QuantType::kF16, {8, 8}, data, 64}});
  EXPECT_NE(message.find("64 bytes given but dtype F16 shape [8, 8] needs 128"), std::string::npos) << message;

  message = WriteError(path, {{"a", QuantType::kU8, {4}, data, 4}, {"a", QuantType::kU8, {4}, data, 4}});
  EXPECT_NE(message.find("'a': written twice"), std::string::npos) << message;

  message = WriteError(path, {{"__metadata__", QuantType::kU8, {4}, data, 4}});
  EXPECT_NE(message.find("reserved"), std::string::npos) << message;

  message = WriteError(path, {{"neg", QuantType::kU8, {-4}, data, 4}});
  EXPECT_NE(message.find("negative dimension"), std::string::npos) << message;

  EXPECT_TRUE(dir.List().empty());
}

// Makes writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored) for this scope.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t limit) {
    getrlimit(RLIMIT_FSIZE, &saved_limit_);
    saved_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_limit_;
    lowered.rlim_cur = limit;
    setrlimit(RLIMIT_FSIZE, &lowered);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_limit_);
    signal(SIGXFSZ, saved_handler_);
  }

 private:
  rlimit saved_limit_{};
  sighandler_t saved_handler_ = nullptr;
};

TEST(SafetensorsWriterTest, FailedWriteLeavesNoTemporaryAndKeepsTheOldFile) {
  TempDir dir;
  const std::string path = dir.File("model.safetensors");
  const std::vector<uint8_t> small = RandomBytes(16, 3);
  WriteSafetensors(path, {{"old", QuantType::kU8, {16}, small.data(), 16}});
  const std::vector<uint8_t> before = ReadFileBytes(path);

  const std::vector<uint8_t> big = RandomBytes(1 << 20, 4);
  {
    FileSizeLimit limit(64 * 1024);  // the disk "fills up" part way through the data
    EXPECT_THROW(WriteSafetensors(path, {{"new", QuantType::kU8, {1 << 20}, big.data(), big.size()}}), Error);
  }
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(ReadFileBytes(path), before);

  // A folder that does not exist: nothing is created anywhere.
  EXPECT_THROW(WriteSafetensors(dir.File("no/such/dir.safetensors"), {}), Error);
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model.safetensors"});
}

// ---- hostile files: one problem each, a clean atq::Error naming the file and the problem ----

TEST(SafetensorsHostileTest, FileShorterThanHeaderLength) {
  ExpectParseError({1, 2, 3, 4, 5}, {"5 bytes", "too short"});
  ExpectParseError({}, {"0 bytes", "too short"});
}

TEST(SafetensorsHostileTest, TruncatedHeader) {
  std::vector<uint8_t> bytes = MakeFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", {1});
  bytes.resize(30);  // cut inside the JSON: the stored length now runs past the end
  ExpectParseError(bytes, {"header length 56 runs past the end of the file (22 bytes after the length)"});
}

TEST(SafetensorsHostileTest, HeaderLengthBeyondFile) {
  ExpectParseError(MakeFile("{}", {}, true, 1000), {"header length 1000 runs past the end of the file"});
}

TEST(SafetensorsHostileTest, GiantHeaderLength) {
  ExpectParseError(MakeFile("{}", {}, true, uint64_t{1} << 62),
                   {"header length 4611686018427387904 is larger than the 100000000-byte limit"});
  ExpectParseError(MakeFile("{}", {}, true, UINT64_MAX), {"is larger than the 100000000-byte limit"});
}

TEST(SafetensorsHostileTest, BadJson) {
  ExpectParseError(MakeFile(R"({"a":{"dtype":"U8",)"), {"header: not valid JSON"});
  // NUL padding (some hand-rolled writers) is not JSON; nlohmann alone would stop reading at the first NUL.
  ExpectParseError(MakeFile(std::string("{}\0\0\0\0\0\0", 8), {}, false), {"not valid JSON: NUL byte at byte 2"});
  ExpectParseError(MakeFile(std::string("{}\0{\"t\":1}", 10)), {"not valid JSON: NUL byte"});
}

TEST(SafetensorsHostileTest, NotAnObject) {
  ExpectParseError(MakeFile("[1, 2]"), {"header must be a JSON object, got array"});
}

TEST(SafetensorsHostileTest, InvalidUtf8) {
  ExpectParseError(MakeFile("{\"a\xff\":{}}"), {"header: not valid UTF-8 (byte 3", "0xFF"});
  ExpectParseError(MakeFile("{\"\xed\xa0\x80\":{}}"), {"not valid UTF-8"});  // a UTF-16 surrogate
  ExpectParseError(MakeFile("{\"\xc0\xaf\":{}}"), {"not valid UTF-8"});      // overlong '/'
}

TEST(SafetensorsHostileTest, DuplicateKey) {
  ExpectParseError(MakeFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                            R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                            {1, 2}),
                   {"duplicate key 'a'"});
  ExpectParseError(MakeFile(R"({"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", {1}),
                   {"duplicate key 'dtype'"});
}

TEST(SafetensorsHostileTest, MissingField) {
  ExpectParseError(MakeFile(R"({"t":{"shape":[1],"data_offsets":[0,1]}})", {1}), {"tensor 't': missing \"dtype\""});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","data_offsets":[0,1]}})", {1}), {"tensor 't': missing \"shape\""});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[1]}})", {1}), {"tensor 't': missing \"data_offsets\""});
}

TEST(SafetensorsHostileTest, WrongTypes) {
  ExpectParseError(MakeFile(R"({"t":5})"), {"tensor 't': entry must be an object", "got integer"});
  ExpectParseError(MakeFile(R"({"t":{"dtype":5,"shape":[1],"data_offsets":[0,1]}})", {1}),
                   {"\"dtype\" must be a string, got integer"});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":"1","data_offsets":[0,1]}})", {1}),
                   {"\"shape\" must be a list of integers, got string"});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", {1}),
                   {"dimension 1.5 in \"shape\" is not an integer"});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", {1}),
                   {"\"data_offsets\" must be [begin, end], got a list of 1"});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":{"a":1}}})", {1}),
                   {"\"data_offsets\" must be [begin, end], got object"});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", {1}),
                   {"\"data_offsets\" [-1,0] must be two non-negative integers"});
  ExpectParseError(MakeFile(R"({"__metadata__":{"format":1}})"),
                   {"\"__metadata__\" value for 'format' must be a string, got integer"});
  ExpectParseError(MakeFile(R"({"__metadata__":["pt"]})"), {"\"__metadata__\" must be an object of strings"});
}

TEST(SafetensorsHostileTest, NegativeDimension) {
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[-1,4],"data_offsets":[0,4]}})", {1, 2, 3, 4}),
                   {"tensor 't': negative dimension -1"});
}

TEST(SafetensorsHostileTest, OverflowingDimensions) {
  ExpectParseError(
      MakeFile(R"({"t":{"dtype":"U8","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})"),
      {"tensor 't'", "more elements than fit in 64 bits"});
  // The element count fits, the byte count does not.
  ExpectParseError(MakeFile(R"({"t":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,0]}})"),
                   {"tensor 't'", "overflow 64 bits"});
  // Zero elements, but the dims after the zero multiply past 2^63 (the 2-D layout would overflow).
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}})"),
                   {"tensor 't'", "product overflows 64 bits"});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})"),
                   {"tensor 't'", "not an integer below 2^63"});
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1e30]}})"),
                   {"must be two non-negative integers"});
}

TEST(SafetensorsHostileTest, OffsetsBeyondFile) {
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[1000],"data_offsets":[0,1000]}})", RandomBytes(8, 5)),
                   {"tensor 't': data_offsets [0, 1000] end past the data section (8 bytes)"});
}

TEST(SafetensorsHostileTest, BeginAfterEnd) {
  ExpectParseError(MakeFile(R"({"t":{"dtype":"U8","shape":[8],"data_offsets":[8,0]}})", RandomBytes(8, 6)),
                   {"tensor 't': data_offsets [8, 0] begin after end"});
}

TEST(SafetensorsHostileTest, SizeMismatch) {
  ExpectParseError(MakeFile(R"({"h.0.attn.c_attn.weight":{"dtype":"F16","shape":[8,8],"data_offsets":[0,100]}})",
                            RandomBytes(128, 7)),
                   {"tensor 'h.0.attn.c_attn.weight': data_offsets [0, 100] but dtype F16 shape [8, 8] needs 128 "
                    "bytes"});
}

TEST(SafetensorsHostileTest, OverlappingTensors) {
  ExpectParseError(MakeFile(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
                            RandomBytes(12, 8)),
                   {"tensors 'a' (data_offsets [0, 8]) and 'b' (data_offsets [4, 12]) overlap"});
  // The same bytes claimed twice.
  ExpectParseError(MakeFile(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                            R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                            RandomBytes(4, 9)),
                   {"'a'", "'b'", "overlap"});
}

TEST(SafetensorsHostileTest, UnknownDtype) {
  ExpectParseError(MakeFile(R"({"t":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", {1}),
                   {"tensor 't': unsupported dtype 'F8_E4M3'", "F32, F16, BF16"});
}

TEST(SafetensorsHostileTest, DeepNesting) {
  const std::string deep = "{\"t\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  ExpectParseError(MakeFile(deep), {"nested more than 64 levels"});
}

TEST(SafetensorsHostileTest, HostileFileOnDiskNamesThePath) {
  TempDir dir;
  const std::string path = dir.File("broken.safetensors");
  WriteFileBytes(path, MakeFile(R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", {1, 2}));
  try {
    SafetensorsFile::Open(path);
    FAIL() << "opened a broken file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": tensor 't': data_offsets [0, 4] end past the data section"),
              std::string::npos)
        << e.what();
  }
}

// ---- files written by other tools (Hugging Face transformers, torchvision, timm via safetensors) ----

uint64_t ParameterCount(const SafetensorsFile& file) {
  uint64_t count = 0;
  for (const TensorInfo& info : file.tensors()) count += CheckedElementCount(info.shape, info.name);
  return count;
}

void ExpectTensor(const SafetensorsFile& file, const std::string& name, QuantType type,
                  const std::vector<int64_t>& shape) {
  const TensorInfo* info = file.Find(name);
  ASSERT_NE(info, nullptr) << name;
  EXPECT_EQ(info->type, type) << name;
  EXPECT_EQ(info->shape, shape) << name;
}

bool AllOfType(const SafetensorsFile& file, QuantType type) {
  for (const TensorInfo& info : file.tensors()) {
    if (info.type != type) return false;
  }
  return true;
}

// The data section is exactly covered, as the Python library writes it.
uint64_t DataEnd(const SafetensorsFile& file) { return file.tensors().back().offset + file.tensors().back().nbytes; }

TEST(SafetensorsFixtureTest, Gpt2Mini) {
  ATQ_FIXTURE_OR_SKIP(path, "gpt2-mini/model/model.safetensors");
  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.tensors().size(), 76u);  // 6 layers x 12 + wte, wpe, ln_f weight and bias; lm_head tied
  EXPECT_EQ(ParameterCount(file), 44'909'056u);
  EXPECT_TRUE(AllOfType(file, QuantType::kF16));
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ExpectTensor(file, "transformer.wte.weight", QuantType::kF16, {50257, 512});
  ExpectTensor(file, "transformer.wpe.weight", QuantType::kF16, {512, 512});
  ExpectTensor(file, "transformer.h.0.attn.c_attn.weight", QuantType::kF16, {512, 1536});  // Conv1D: [in, out]
  ExpectTensor(file, "transformer.h.5.mlp.c_proj.weight", QuantType::kF16, {2048, 512});
  EXPECT_EQ(file.Find("lm_head.weight"), nullptr);
  EXPECT_EQ(file.data_offset(), 8u + 7536u);
  EXPECT_EQ(file.data_offset() + DataEnd(file), file.file_size());
  EXPECT_EQ(file.tensors().front().name, "transformer.h.0.attn.c_attn.bias");
  const TensorInfo* wte = file.Find("transformer.wte.weight");
  EXPECT_EQ(wte->layout.rows, 50257);
  EXPECT_EQ(wte->layout.cols, 512);
}

TEST(SafetensorsFixtureTest, LlamaMini) {
  ATQ_FIXTURE_OR_SKIP(path, "llama-mini/model/model.safetensors");
  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.tensors().size(), 56u);  // 6 layers x 9 + embed_tokens + norm; lm_head tied
  EXPECT_EQ(ParameterCount(file), 44'612'608u);
  EXPECT_TRUE(AllOfType(file, QuantType::kF16));
  ExpectTensor(file, "model.embed_tokens.weight", QuantType::kF16, {50257, 512});
  ExpectTensor(file, "model.layers.0.self_attn.q_proj.weight", QuantType::kF16, {512, 512});
  ExpectTensor(file, "model.layers.0.self_attn.k_proj.weight", QuantType::kF16, {256, 512});  // 4 KV heads of 64
  ExpectTensor(file, "model.layers.5.mlp.gate_proj.weight", QuantType::kF16, {1536, 512});
  ExpectTensor(file, "model.norm.weight", QuantType::kF16, {512});
  EXPECT_EQ(file.Find("lm_head.weight"), nullptr);
  EXPECT_EQ(file.data_offset() + DataEnd(file), file.file_size());
}

TEST(SafetensorsFixtureTest, Resnet18) {
  ATQ_FIXTURE_OR_SKIP(path, "resnet18/model.safetensors");
  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.tensors().size(), 122u);
  EXPECT_EQ(ParameterCount(file), 11'182'430u);  // 11.17 M parameters plus BatchNorm statistics
  EXPECT_TRUE(AllOfType(file, QuantType::kF32));
  ExpectTensor(file, "conv1.weight", QuantType::kF32, {64, 1, 3, 3});  // 3x3 stem on one input channel
  ExpectTensor(file, "fc.weight", QuantType::kF32, {10, 512});
  ExpectTensor(file, "layer4.1.conv2.weight", QuantType::kF32, {512, 512, 3, 3});
  ExpectTensor(file, "bn1.num_batches_tracked", QuantType::kF32, {});  // a scalar
  float batches = 0;
  std::memcpy(&batches, file.Data(*file.Find("bn1.num_batches_tracked")), 4);
  EXPECT_EQ(batches, 9371.0f);
  EXPECT_EQ(file.data_offset() + DataEnd(file), file.file_size());
}

TEST(SafetensorsFixtureTest, VitTiny) {
  ATQ_FIXTURE_OR_SKIP(path, "vit-tiny/model.safetensors");
  const SafetensorsFile file = SafetensorsFile::Open(path);
  EXPECT_EQ(file.tensors().size(), 152u);  // 12 blocks x 12 + cls_token, pos_embed, patch_embed x2, norm x2, head x2
  EXPECT_EQ(ParameterCount(file), 5'353'738u);
  EXPECT_TRUE(AllOfType(file, QuantType::kF32));
  ExpectTensor(file, "cls_token", QuantType::kF32, {1, 1, 192});
  ExpectTensor(file, "pos_embed", QuantType::kF32, {1, 50, 192});  // 7x7 patches + class token
  ExpectTensor(file, "patch_embed.proj.weight", QuantType::kF32, {192, 1, 4, 4});
  ExpectTensor(file, "blocks.11.attn.qkv.weight", QuantType::kF32, {576, 192});
  ExpectTensor(file, "head.weight", QuantType::kF32, {10, 192});
}

TEST(SafetensorsFixtureTest, LanguageModelReferenceOutputsMatchTokenizerReference) {
  for (const std::string model : {"gpt2-mini", "llama-mini"}) {
    ATQ_FIXTURE_OR_SKIP(path, model + "/reference_outputs.safetensors");
    ATQ_FIXTURE_OR_SKIP(tokens_path, model + "/tokenizer_reference.json");
    const SafetensorsFile file = SafetensorsFile::Open(path);
    EXPECT_TRUE(file.metadata().empty());
    ExpectTensor(file, "input_ids", QuantType::kI64, {2, 128});
    ExpectTensor(file, "logits_every_16th_position", QuantType::kF32, {2, 8, 50257});
    ExpectTensor(file, "target_logprobs", QuantType::kF32, {2, 127});
    // The input ids are the first 256 test tokens, which the tokenizer reference also lists.
    const std::vector<uint8_t> json_bytes = ReadFileBytes(tokens_path);
    const nlohmann::json tokens = nlohmann::json::parse(json_bytes.begin(), json_bytes.end());
    const TensorInfo& ids = *file.Find("input_ids");
    const uint8_t* data = file.Data(ids);
    for (size_t i = 0; i < 256; ++i) {
      int64_t id = 0;
      std::memcpy(&id, data + 8 * i, 8);
      ASSERT_EQ(id, tokens["ids"][i].get<int64_t>()) << model << " token " << i;
    }
    float logprob = 0;
    std::memcpy(&logprob, file.Data(*file.Find("target_logprobs")), 4);
    EXPECT_TRUE(std::isfinite(logprob) && logprob <= 0.0f) << logprob;
  }
}

TEST(SafetensorsFixtureTest, ImageReferenceOutputs) {
  for (const std::string model : {"resnet18", "vit-tiny"}) {
    ATQ_FIXTURE_OR_SKIP(path, model + "/reference_outputs.safetensors");
    const SafetensorsFile file = SafetensorsFile::Open(path);
    ASSERT_EQ(file.tensors().size(), 2u);
    ExpectTensor(file, "images", QuantType::kF32, {16, 1, 28, 28});
    ExpectTensor(file, "logits", QuantType::kF32, {16, 10});
  }
}

// Every fixture, read, written by atq and read again: identical tensors and bytes. Single-dtype files and
// these reference outputs are in the order the Rust library writes (alignment, then name), so atq's file is
// byte-for-byte the original.
TEST(SafetensorsFixtureTest, ReadWriteReadIsIdentical) {
  const std::vector<std::string> fixtures = {
      "gpt2-mini/model/model.safetensors",     "llama-mini/model/model.safetensors",
      "resnet18/model.safetensors",            "vit-tiny/model.safetensors",
      "gpt2-mini/reference_outputs.safetensors", "llama-mini/reference_outputs.safetensors",
      "resnet18/reference_outputs.safetensors", "vit-tiny/reference_outputs.safetensors"};
  TempDir dir;
  for (const std::string& relative : fixtures) {
    ATQ_FIXTURE_OR_SKIP(path, relative);
    SCOPED_TRACE(relative);
    const SafetensorsFile original = SafetensorsFile::Open(path);
    std::vector<TensorToWrite> tensors;
    for (const TensorInfo& info : original.tensors()) {
      tensors.push_back({info.name, info.type, info.shape, original.Data(info), info.nbytes});
    }
    const std::string copy_path = dir.File("copy.safetensors");
    WriteSafetensors(copy_path, tensors, original.metadata());
    const SafetensorsFile copy = SafetensorsFile::Open(copy_path);
    EXPECT_EQ(copy.metadata(), original.metadata());
    ASSERT_EQ(copy.tensors().size(), original.tensors().size());
    for (size_t i = 0; i < copy.tensors().size(); ++i) {
      const TensorInfo& a = original.tensors()[i];
      const TensorInfo& b = copy.tensors()[i];
      ASSERT_EQ(a.name, b.name);
      EXPECT_EQ(a.type, b.type);
      EXPECT_EQ(a.shape, b.shape);
      EXPECT_EQ(a.offset, b.offset);
      ASSERT_EQ(a.nbytes, b.nbytes);
      EXPECT_TRUE(SameBytes(original.Data(a), copy.Data(b), a.nbytes)) << a.name;
    }
    const MappedFile original_bytes = MappedFile::Open(path);
    const MappedFile copy_bytes = MappedFile::Open(copy_path);
    ASSERT_EQ(copy_bytes.size(), original_bytes.size());
    EXPECT_TRUE(SameBytes(copy_bytes.data(), original_bytes.data(), copy_bytes.size()))
        << "atq's bytes differ from the original file";
  }
}

}  // namespace
}  // namespace atq

namespace atq {
namespace {

TEST(SafetensorsStreamWriterTest, WritesWhatWriteSafetensorsWritesAndLeavesNoFileUnfinished) {
  testutil::TempDir dir;
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<float> b = {7, 8};
  const std::vector<TensorToWrite> tensors = {
      {"a", QuantType::kF32, {2, 3}, reinterpret_cast<const uint8_t*>(a.data()), a.size() * 4},
      {"b", QuantType::kF32, {2}, reinterpret_cast<const uint8_t*>(b.data()), b.size() * 4}};
  WriteSafetensors(dir.File("whole.safetensors"), tensors);
  {
    SafetensorsStreamWriter writer(dir.File("stream.safetensors"), tensors);
    writer.Write(a.data(), 8);  // in pieces that do not follow the tensors
    writer.Write(reinterpret_cast<const uint8_t*>(a.data()) + 8, 16);
    writer.Write(b.data(), 4);
    writer.Write(b.data() + 1, 4);
    writer.Commit();
  }
  EXPECT_EQ(testutil::ReadFileBytes(dir.File("whole.safetensors")), testutil::ReadFileBytes(dir.File("stream.safetensors")));
  {
    SafetensorsStreamWriter writer(dir.File("cut.safetensors"), tensors);
    writer.Write(a.data(), 24);
    testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { writer.Commit(); }), "cut.safetensors",
                                {"24 of the 32"});
    testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { writer.Write(a.data(), 24); }), "cut.safetensors",
                                {"more bytes than the header declares"});
  }
  EXPECT_EQ(dir.List(), (std::vector<std::string>{"stream.safetensors", "whole.safetensors"}));  // nothing of "cut"
}

}  // namespace
}  // namespace atq
