// GGUF: metadata of every type, every tensor format of the table, the exact bytes of a tiny file, hostile
// files (one problem each), and llama.cpp's own files for stories260K.
#include "io/gguf.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "test_util.h"
#include "formats/ggml_blocks.h"
#include "formats/half.h"
#include "util/error.h"

namespace atq {
namespace {

using testutil::ReadFileBytes;
using testutil::TempDir;
using testutil::WriteFileBytes;

constexpr const char* kHostileName = "hostile.gguf";

// ---- hand-built files ----

// Little-endian bytes appended field by field, the way the spec lists them.
class Bytes {
 public:
  Bytes& U8(uint8_t value) { return Raw(&value, 1); }
  Bytes& U32(uint32_t value) { return Raw(&value, 4); }
  Bytes& U64(uint64_t value) { return Raw(&value, 8); }
  Bytes& F32(float value) { return Raw(&value, 4); }
  Bytes& Text(std::string_view text) { return Raw(text.data(), text.size()); }
  Bytes& Str(std::string_view text) { return U64(text.size()).Text(text); }
  Bytes& Zeros(size_t count) {
    bytes_.resize(bytes_.size() + count, 0);
    return *this;
  }
  Bytes& PadTo(size_t alignment) { return Zeros((alignment - bytes_.size() % alignment) % alignment); }
  Bytes& Append(const std::vector<uint8_t>& more) {
    bytes_.insert(bytes_.end(), more.begin(), more.end());
    return *this;
  }
  Bytes& Raw(const void* data, size_t size) {
    const auto* p = static_cast<const uint8_t*>(data);
    bytes_.insert(bytes_.end(), p, p + size);
    return *this;
  }
  size_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// One metadata entry: key, type id, value bytes.
std::vector<uint8_t> Kv(std::string_view key, uint32_t type, const Bytes& value) {
  return Bytes().Str(key).U32(type).Append(value.bytes()).bytes();
}
std::vector<uint8_t> KvU32(std::string_view key, uint32_t value) { return Kv(key, 4, Bytes().U32(value)); }
std::vector<uint8_t> KvString(std::string_view key, std::string_view value) {
  return Kv(key, 8, Bytes().Str(value));
}

struct RawTensor {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: innermost first
  uint32_t type = 0;
  uint64_t offset = 0;
};

struct RawFile {
  uint32_t version = 3;
  std::vector<std::vector<uint8_t>> kvs;
  std::vector<RawTensor> tensors;
  uint64_t data_bytes = 0;  // zero bytes after the padded tensor infos
  uint32_t alignment = 32;  // where the data section starts (general.alignment is up to `kvs`)
  std::optional<uint64_t> kv_count;      // overrides the true count
  std::optional<uint64_t> tensor_count;  // overrides the true count
};

std::vector<uint8_t> Build(const RawFile& file) {
  Bytes out;
  out.Text("GGUF").U32(file.version);
  out.U64(file.tensor_count.value_or(file.tensors.size())).U64(file.kv_count.value_or(file.kvs.size()));
  for (const auto& kv : file.kvs) out.Append(kv);
  for (const RawTensor& tensor : file.tensors) {
    out.Str(tensor.name).U32(static_cast<uint32_t>(tensor.ne.size()));
    for (uint64_t extent : tensor.ne) out.U64(extent);
    out.U32(tensor.type).U64(tensor.offset);
  }
  out.PadTo(file.alignment).Zeros(file.data_bytes);
  return out.bytes();
}

// A valid file with metadata of several kinds and two f32 tensors, for the tests that break one thing.
RawFile ValidRawFile() {
  RawFile file;
  file.kvs.push_back(KvString("general.architecture", "llama"));
  file.kvs.push_back(KvU32("llama.block_count", 5));
  file.kvs.push_back(Kv("tokenizer.ggml.tokens", 9, Bytes().U32(8).U64(2).Str("<s>").Str("</s>")));
  file.kvs.push_back(Kv("tokenizer.ggml.scores", 9, Bytes().U32(6).U64(2).F32(0.5f).F32(-1.0f)));
  file.tensors.push_back({"a", {8, 2}, 0, 0});    // [2, 8] f32, 64 bytes
  file.tensors.push_back({"b", {4}, 0, 64});      // [4] f32, 16 bytes
  file.data_bytes = 80;
  return file;
}

// The atq::Error message FromBytes gives for `bytes`; fails the test on success or on any other exception.
std::string ParseError(const std::vector<uint8_t>& bytes) {
  return testutil::ErrorMessageOf([&] { GgufFile::FromBytes(kHostileName, bytes); });
}

// Every message names the file and the specific problem.
void ExpectParseError(const std::vector<uint8_t>& bytes, const std::vector<std::string>& needles) {
  testutil::ExpectErrorNaming(ParseError(bytes), kHostileName, needles);
}
void ExpectParseError(const RawFile& file, const std::vector<std::string>& needles) {
  ExpectParseError(Build(file), needles);
}

std::vector<uint8_t> PatternBytes(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(count);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  return bytes;
}

std::string WriterError(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected atq::Error from the writer";
  return "";
}

// ---- metadata ----

// Every value type, extreme values, arrays of every element type and nested arrays.
GgufMetadata EveryTypeMetadata() {
  GgufMetadata metadata;
  metadata.Set("t.u8", uint8_t{255});
  metadata.Set("t.i8", int8_t{-128});
  metadata.Set("t.u16", uint16_t{65535});
  metadata.Set("t.i16", int16_t{-32768});
  metadata.Set("t.u32", uint32_t{4294967295u});
  metadata.Set("t.i32", int32_t{-2147483647 - 1});
  metadata.Set("t.f32", -0.0f);
  metadata.Set("t.bool", true);
  metadata.Set("t.string", "ünïcödé \"quoted\"\n");
  metadata.Set("t.u64", std::numeric_limits<uint64_t>::max());
  metadata.Set("t.i64", std::numeric_limits<int64_t>::min());
  metadata.Set("t.f64", std::numeric_limits<double>::quiet_NaN());
  metadata.Set("t.empty_string", "");
  metadata.Set("t.raw_bytes", std::string("\xff\x00\xfe", 3));  // values may hold any bytes
  metadata.Set("a.u8", GgufArray(std::vector<uint8_t>{0, 1, 255}));
  metadata.Set("a.i8", GgufArray(std::vector<int8_t>{-1, 7}));
  metadata.Set("a.u16", GgufArray(std::vector<uint16_t>{1, 65535}));
  metadata.Set("a.i16", GgufArray(std::vector<int16_t>{-2, 3}));
  metadata.Set("a.u32", GgufArray(std::vector<uint32_t>{5, 6, 7}));
  metadata.Set("a.i32", GgufArray(std::vector<int32_t>{-5, 6}));
  metadata.Set("a.f32", GgufArray(std::vector<float>{1.5f, -std::numeric_limits<float>::infinity()}));
  metadata.Set("a.bool", GgufArray(std::vector<bool>{true, false, true}));
  metadata.Set("a.string", GgufArray(std::vector<std::string>{"<s>", "", "▁the", std::string("\x80", 1)}));
  metadata.Set("a.u64", GgufArray(std::vector<uint64_t>{0, std::numeric_limits<uint64_t>::max()}));
  metadata.Set("a.i64", GgufArray(std::vector<int64_t>{-1, 1}));
  metadata.Set("a.f64", GgufArray(std::vector<double>{0.25, -1e300}));
  metadata.Set("a.empty", GgufArray(std::vector<float>{}));
  metadata.Set("a.nested", GgufArray(std::vector<GgufArray>{
                               GgufArray(std::vector<std::string>{"a", "b"}),
                               GgufArray(std::vector<std::string>{}),
                               GgufArray(std::vector<std::string>{"c"}),
                           }));
  metadata.Set("a.mixed_nested", GgufArray(std::vector<GgufArray>{
                                     GgufArray(std::vector<int32_t>{1, 2}),
                                     GgufArray(std::vector<GgufArray>{GgufArray(std::vector<bool>{false})}),
                                 }));
  // The deepest nesting a file may hold.
  GgufArray deepest(std::vector<uint8_t>{42});
  for (int depth = 1; depth < kMaxArrayDepth; ++depth) deepest = GgufArray(std::vector<GgufArray>{deepest});
  metadata.Set("a.deepest", deepest);
  return metadata;
}

TEST(GgufMetadataTest, EveryValueTypeRoundTrips) {
  GgufWriter writer("metadata.gguf");
  writer.metadata() = EveryTypeMetadata();
  const GgufFile file = GgufFile::FromBytes("metadata.gguf", writer.Serialize());
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), 32u);
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_EQ(file.metadata(), EveryTypeMetadata());  // same keys, same order, same bits (NaN and -0.0 too)

  const GgufMetadata& m = file.metadata();
  std::vector<std::string> keys;
  for (const auto& [key, value] : m) keys.push_back(key);
  EXPECT_EQ(keys.front(), "t.u8");
  EXPECT_EQ(keys.back(), "a.deepest");
  EXPECT_EQ(m.Find("t.i64")->type(), GgufType::kInt64);
  EXPECT_EQ(m.GetUint("t.u8"), 255u);
  EXPECT_EQ(m.GetUint("t.u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(m.GetInt("t.i8"), -128);
  EXPECT_EQ(m.GetInt("t.u32"), 4294967295);
  EXPECT_EQ(m.GetInt("t.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_TRUE(std::signbit(m.GetFloat("t.f32")));
  EXPECT_TRUE(std::isnan(m.GetFloat("t.f64")));
  EXPECT_TRUE(m.GetBool("t.bool"));
  EXPECT_EQ(m.GetString("t.string"), "ünïcödé \"quoted\"\n");
  EXPECT_EQ(m.GetString("t.raw_bytes"), std::string("\xff\x00\xfe", 3));
  EXPECT_EQ(m.GetStringArray("a.string"), (std::vector<std::string>{"<s>", "", "▁the", std::string("\x80", 1)}));
  EXPECT_EQ(m.GetFloatArray("a.f32")[0], 1.5f);
  EXPECT_EQ(m.GetFloatArray("a.f64"), (std::vector<float>{0.25f, -std::numeric_limits<float>::infinity()}));
  EXPECT_EQ(m.GetIntArray("a.u8"), (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(m.GetIntArray("a.i16"), (std::vector<int64_t>{-2, 3}));
  EXPECT_TRUE(m.GetArray("a.empty").empty());
  EXPECT_EQ(m.GetArray("a.empty").element_type(), GgufType::kFloat32);
  const auto* nested = m.GetArray("a.nested").get_if<GgufArray>();
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->size(), 3u);
  EXPECT_EQ(*(*nested)[0].get_if<std::string>(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ((*nested)[1].element_type(), GgufType::kString);
  EXPECT_EQ(m.GetArray("a.bool"), GgufArray(std::vector<bool>{true, false, true}));
}

TEST(GgufMetadataTest, SetKeepsPositionAndEraseRemoves) {
  GgufMetadata m("test.gguf");
  m.Set("a", uint32_t{1});
  m.Set("b", "two");
  m.Set("c", 3.0f);
  m.Set("a", "replaced");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.entries()[0].first, "a");
  EXPECT_EQ(m.GetString("a"), "replaced");
  EXPECT_TRUE(m.Erase("b"));
  EXPECT_FALSE(m.Erase("b"));
  EXPECT_FALSE(m.Contains("b"));
  EXPECT_EQ(m.entries()[1].first, "c");
  EXPECT_EQ(m.GetFloat("c"), 3.0);
  m.Set("d", true);
  EXPECT_EQ(m.entries().back().first, "d");
  EXPECT_TRUE(m.GetBool("d"));
}

TEST(GgufMetadataTest, TypedReadsExplainMismatches) {
  GgufMetadata m("model.gguf");
  m.Set("count", uint32_t{7});
  m.Set("negative", int32_t{-3});
  m.Set("huge", std::numeric_limits<uint64_t>::max());
  m.Set("name", "llama");
  m.Set("floats", GgufArray(std::vector<float>{1.0f}));
  m.Set("big_ints", GgufArray(std::vector<uint64_t>{1, std::numeric_limits<uint64_t>::max()}));
  const auto message = [](const std::function<void()>& action) {
    try {
      action();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string wrong_type = message([&] { m.GetString("count"); });
  EXPECT_NE(wrong_type.find("model.gguf"), std::string::npos) << wrong_type;
  EXPECT_NE(wrong_type.find("'count' is u32, expected a string"), std::string::npos) << wrong_type;
  EXPECT_NE(message([&] { m.GetUint("missing"); }).find("model.gguf: metadata key 'missing' is missing"),
            std::string::npos);
  EXPECT_NE(message([&] { m.GetUint("negative"); }).find("expected a value >= 0"), std::string::npos);
  EXPECT_NE(message([&] { m.GetInt("huge"); }).find("does not fit int64"), std::string::npos);
  EXPECT_NE(message([&] { m.GetUint("name"); }).find("is string, expected an unsigned integer"),
            std::string::npos);
  EXPECT_NE(message([&] { m.GetFloat("count"); }).find("expected f32 or f64"), std::string::npos);
  EXPECT_NE(message([&] { m.GetBool("name"); }).find("expected bool"), std::string::npos);
  EXPECT_NE(message([&] { m.GetArray("name"); }).find("expected an array"), std::string::npos);
  EXPECT_NE(message([&] { m.GetStringArray("floats"); }).find("array of f32, expected strings"),
            std::string::npos);
  EXPECT_NE(message([&] { m.GetIntArray("floats"); }).find("expected integers"), std::string::npos);
  EXPECT_NE(message([&] { m.GetIntArray("big_ints"); }).find("element 1"), std::string::npos);
  EXPECT_NE(message([&] { m.GetFloatArray("big_ints"); }).find("array of u64"), std::string::npos);
  EXPECT_NE(message([&] { m.GetString("floats"); }).find("is an array, expected a string"), std::string::npos);
}

// ---- tensors of every format ----

struct WrittenTensor {
  TensorInfo info;
  std::vector<uint8_t> bytes;
};

// Tensors of every type in the format table that GGUF can hold, in shapes each type accepts; atq's packed
// types once per scale layout.
std::vector<WrittenTensor> EveryFormatTensors() {
  std::vector<WrittenTensor> tensors;
  uint32_t seed = 1;
  const auto add = [&](QuantType type, std::vector<int64_t> shape, Granularity granularity, int64_t group_size) {
    WrittenTensor tensor;
    tensor.info.type = type;
    tensor.info.shape = std::move(shape);
    tensor.info.layout = LayoutForShape(type, tensor.info.shape);
    tensor.info.layout.granularity = granularity;
    tensor.info.layout.group_size = group_size;
    tensor.info.nbytes = static_cast<uint64_t>(PackedBytes(tensor.info.layout));
    tensor.info.name = fmt::format("{}.{}.{}", TypeName(type), tensors.size(), GranularityString(tensor.info.layout));
    tensor.bytes = PatternBytes(tensor.info.nbytes, seed++);
    tensors.push_back(std::move(tensor));
  };
  for (const TypeTraits& traits : AllTypes()) {
    if (traits.type == QuantType::kU8 || traits.type == QuantType::kBool) continue;  // no GGUF id
    const bool is_atq = traits.family == TypeFamily::kTernary || traits.family == TypeFamily::kUniform;
    std::vector<std::vector<int64_t>> shapes = {{3, 512}, {2, 3, 256}, {0, 256}, {1, 1, 2, 256}};
    if (traits.block_size == 1 || is_atq) {
      shapes.push_back({});    // scalar: 0 dims
      shapes.push_back({7});   // odd length
      shapes.push_back({5, 0});
    }
    if (!is_atq) {
      for (const auto& shape : shapes) add(traits.type, shape, Granularity::kTensor, 0);
      continue;
    }
    add(traits.type, {3, 512}, Granularity::kTensor, 0);
    add(traits.type, {5, 37}, Granularity::kChannel, 0);
    add(traits.type, {4, 2, 50}, Granularity::kChannel, 0);
    add(traits.type, {3, 512}, Granularity::kGroup, 64);
    add(traits.type, {3, 300}, Granularity::kGroup, 128);  // short tail group
    add(traits.type, {}, Granularity::kTensor, 0);
    add(traits.type, {7}, Granularity::kGroup, 3);
  }
  return tensors;
}

void ExpectSameTensors(const GgufFile& file, const std::vector<WrittenTensor>& expected) {
  ASSERT_EQ(file.tensors().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const TensorInfo& got = file.tensors()[i];
    const TensorInfo& want = expected[i].info;
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.type, want.type) << want.name;
    EXPECT_EQ(got.shape, want.shape) << want.name;
    EXPECT_EQ(got.layout.rows, want.layout.rows) << want.name;
    EXPECT_EQ(got.layout.cols, want.layout.cols) << want.name;
    EXPECT_EQ(got.layout.granularity, want.layout.granularity) << want.name;
    EXPECT_EQ(got.layout.group_size, want.layout.group_size) << want.name;
    EXPECT_EQ(got.nbytes, want.nbytes) << want.name;
    EXPECT_EQ(got.offset % file.alignment(), 0u) << want.name;
    EXPECT_EQ((file.data_offset() + got.offset) % file.alignment(), 0u) << want.name;
    EXPECT_EQ(file.Find(want.name), &got);
    ASSERT_EQ(std::vector<uint8_t>(file.Data(got), file.Data(got) + got.nbytes), expected[i].bytes) << want.name;
  }
}

TEST(GgufRoundTripTest, EveryFormatInTheTable) {
  TempDir dir;
  const std::vector<WrittenTensor> tensors = EveryFormatTensors();
  GgufWriter writer(dir.File("formats.gguf"));
  writer.metadata().Set("general.architecture", "test");
  for (const WrittenTensor& tensor : tensors) writer.AddTensor(tensor.info, tensor.bytes.data());
  writer.Write();
  EXPECT_EQ(dir.List(), std::vector<std::string>{"formats.gguf"});  // no temporary left behind

  const GgufFile file = GgufFile::Open(dir.File("formats.gguf"));
  EXPECT_EQ(file.path(), dir.File("formats.gguf"));
  ExpectSameTensors(file, tensors);
  EXPECT_EQ(ReadFileBytes(file.path()), writer.Serialize());
  // Every atq-typed tensor with per-channel or per-group scales got its layout key, after the caller's
  // metadata; per tensor is what an absent key means.
  for (const WrittenTensor& tensor : tensors) {
    const GgufValue* layout = file.metadata().Find("atq.layout." + tensor.info.name);
    if (tensor.info.type >= QuantType::kTernary2 && tensor.info.layout.granularity != Granularity::kTensor) {
      ASSERT_NE(layout, nullptr) << tensor.info.name;
      EXPECT_EQ(layout->AsString("layout"), GranularityString(tensor.info.layout));
    } else {
      EXPECT_EQ(layout, nullptr) << tensor.info.name;
    }
  }
  EXPECT_EQ(file.metadata().entries()[0].first, "general.architecture");
  EXPECT_EQ(file.metadata().size(), 1 + 16 * 5u);  // 16 atq types, 5 tensors each with a non-default layout
}

// Real quantized data, not just bytes: what comes back dequantizes to the same floats, so the scale layout
// survived the trip.
TEST(GgufRoundTripTest, QuantizedTensorsDequantizeIdentically) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> weights(4 * 512);
  for (float& w : weights) w = normal(rng);
  struct Case {
    QuantType type;
    Granularity granularity;
    int64_t group_size;
  };
  const std::vector<Case> cases = {{QuantType::kQ8_0, Granularity::kTensor, 0},
                                   {QuantType::kQ4_0, Granularity::kTensor, 0},
                                   {QuantType::kTQ1_0, Granularity::kTensor, 0},
                                   {QuantType::kTQ2_0, Granularity::kTensor, 0},
                                   {QuantType::kTernary2, Granularity::kChannel, 0},
                                   {QuantType::kTernary1_6, Granularity::kGroup, 128},
                                   {QuantType::kUniform4Sym, Granularity::kGroup, 64},
                                   {QuantType::kUniform3Asym, Granularity::kChannel, 0}};
  std::vector<std::vector<uint8_t>> packed;
  GgufWriter writer("quantized.gguf");
  for (const Case& c : cases) {
    Layout layout = LayoutForShape(c.type, {4, 512});
    layout.granularity = c.granularity;
    layout.group_size = c.group_size;
    packed.push_back(Quantize(layout, weights.data()));
    writer.AddTensor(std::string(TypeName(c.type)), c.type, {4, 512}, packed.back().data(), packed.back().size(),
                     c.granularity, c.group_size);
  }
  const GgufFile file = GgufFile::FromBytes("quantized.gguf", writer.Serialize());
  for (size_t i = 0; i < cases.size(); ++i) {
    const TensorInfo& tensor = file.tensors()[i];
    Layout original = LayoutForShape(cases[i].type, {4, 512});
    original.granularity = cases[i].granularity;
    original.group_size = cases[i].group_size;
    EXPECT_EQ(Dequantize(tensor.layout, file.Data(tensor), static_cast<int64_t>(tensor.nbytes)),
              Dequantize(original, packed[i].data(), static_cast<int64_t>(packed[i].size())))
        << tensor.name;
  }
}

TEST(GgufRoundTripTest, AlignmentIsHonored) {
  for (uint32_t alignment : {1u, 8u, 64u, 4096u}) {
    const std::vector<uint8_t> a = PatternBytes(4 * 3, 1), b = PatternBytes(2 * 5, 2);
    GgufWriter writer("aligned.gguf");
    writer.metadata().Set(std::string(kGgufAlignmentKey), alignment);
    writer.AddTensor("a", QuantType::kF32, {3}, a.data(), a.size());
    writer.AddTensor("b", QuantType::kF16, {5}, b.data(), b.size());
    const std::vector<uint8_t> bytes = writer.Serialize();
    const GgufFile file = GgufFile::FromBytes("aligned.gguf", bytes);
    EXPECT_EQ(file.alignment(), alignment);
    EXPECT_EQ(file.data_offset() % alignment, 0u);
    const TensorInfo& second = file.tensors()[1];
    EXPECT_EQ(second.offset, (12 + alignment - 1) / alignment * alignment);
    EXPECT_EQ(std::vector<uint8_t>(file.Data(second), file.Data(second) + second.nbytes), b);
    EXPECT_EQ(bytes.size() % alignment, 0u) << "the last tensor is padded too, as llama.cpp writes it";
  }
}

// The whole file, byte for byte: header, one key-value pair, one tensor info, padding, data, padding.
TEST(GgufRoundTripTest, TinyFileBytesMatchTheSpec) {
  const float values[2] = {1.0f, 2.0f};
  GgufWriter writer("tiny.gguf");
  writer.metadata().Set("a.b", uint32_t{7});
  writer.AddTensor("t", QuantType::kF32, {2}, values, sizeof(values));
  const std::vector<uint8_t> expected = {
      'G', 'G', 'U', 'F',                              // magic
      3, 0, 0, 0,                                      // version
      1, 0, 0, 0, 0, 0, 0, 0,                          // tensor count
      1, 0, 0, 0, 0, 0, 0, 0,                          // metadata count
      3, 0, 0, 0, 0, 0, 0, 0, 'a', '.', 'b',           // key
      4, 0, 0, 0,                                      // value type u32
      7, 0, 0, 0,                                      // value
      1, 0, 0, 0, 0, 0, 0, 0, 't',                     // tensor name
      1, 0, 0, 0,                                      // n_dims
      2, 0, 0, 0, 0, 0, 0, 0,                          // ne[0]
      0, 0, 0, 0,                                      // type f32
      0, 0, 0, 0, 0, 0, 0, 0,                          // offset
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  // padding: 76 bytes so far, up to 96
      0, 0, 0, 0,                                      //
      0, 0, 0x80, 0x3f, 0, 0, 0, 0x40,                 // 1.0f, 2.0f
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  // padding after the tensor, up to 128
      0, 0, 0, 0, 0, 0, 0, 0,                          //
  };
  const std::vector<uint8_t> bytes = writer.Serialize();
  EXPECT_EQ(bytes, expected);
  const GgufFile file = GgufFile::FromBytes("tiny.gguf", bytes);
  EXPECT_EQ(file.data_offset(), 96u);
  EXPECT_EQ(file.tensors()[0].shape, std::vector<int64_t>{2});
}

// A hand-built file read back: ggml's innermost-first ne becomes outermost-first, offsets count from the
// aligned data section, tensors may come in any order with gaps, and version 2 reads like 3.
TEST(GgufReaderTest, ReadsHandBuiltFile) {
  for (uint32_t version : {2u, 3u}) {
    RawFile raw = ValidRawFile();
    raw.version = version;
    raw.tensors = {{"late", {4}, 0, 96}, {"scalar", {}, 0, 32}, {"empty", {0, 3}, 0, 64}, {"m", {2, 3}, 0, 0}};
    raw.data_bytes = 112;
    std::vector<uint8_t> bytes = Build(raw);
    const size_t data_offset = bytes.size() - raw.data_bytes;
    bytes[data_offset + 96] = 0xAB;
    const GgufFile file = GgufFile::FromBytes("hand.gguf", bytes);
    EXPECT_EQ(file.version(), version);
    EXPECT_EQ(file.data_offset(), data_offset);
    EXPECT_EQ(file.data_offset() % 32, 0u);
    EXPECT_EQ(file.metadata().GetString("general.architecture"), "llama");
    EXPECT_EQ(file.metadata().GetUint("llama.block_count"), 5u);
    EXPECT_EQ(file.metadata().GetStringArray("tokenizer.ggml.tokens"), (std::vector<std::string>{"<s>", "</s>"}));
    EXPECT_EQ(file.metadata().GetFloatArray("tokenizer.ggml.scores"), (std::vector<float>{0.5f, -1.0f}));
    ASSERT_EQ(file.tensors().size(), 4u);
    EXPECT_EQ(file.Find("late")->shape, std::vector<int64_t>{4});
    EXPECT_EQ(file.Find("late")->nbytes, 16u);
    EXPECT_EQ(file.Data(*file.Find("late"))[0], 0xAB);
    EXPECT_EQ(file.Find("scalar")->shape, std::vector<int64_t>{});
    EXPECT_EQ(file.Find("scalar")->nbytes, 4u);
    EXPECT_EQ(file.Find("empty")->shape, (std::vector<int64_t>{3, 0}));
    EXPECT_EQ(file.Find("empty")->nbytes, 0u);
    EXPECT_EQ(file.Find("m")->shape, (std::vector<int64_t>{3, 2}));
    EXPECT_EQ(file.Find("m")->layout.rows, 3);
    EXPECT_EQ(file.Find("m")->layout.cols, 2);
    EXPECT_EQ(file.Find("nope"), nullptr);
  }
}

TEST(GgufReaderTest, FileWithoutTensorsNeedsNoPadding) {
  RawFile raw;
  raw.kvs.push_back(KvU32("k", 1));
  raw.alignment = 1;
  const GgufFile file = GgufFile::FromBytes("metadata-only.gguf", Build(raw));
  EXPECT_EQ(file.metadata().GetUint("k"), 1u);
  EXPECT_TRUE(file.tensors().empty());
}

TEST(GgufReaderTest, DataRejectsTensorFromAnotherFile) {
  const GgufFile file = GgufFile::FromBytes("small.gguf", Build(ValidRawFile()));
  TensorInfo foreign = file.tensors()[0];
  foreign.offset = 1 << 20;
  try {
    file.Data(foreign);
    ADD_FAILURE() << "expected atq::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("small.gguf: tensor 'a'"), std::string::npos) << e.what();
  }
}

TEST(GgufReaderTest, OpenNamesMissingFile) {
  TempDir dir;
  try {
    GgufFile::Open(dir.File("missing.gguf"));
    ADD_FAILURE() << "expected atq::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.File("missing.gguf")), std::string::npos) << e.what();
  }
}

// ---- the writer's checks ----

TEST(GgufWriterTest, RejectsBadTensors) {
  const std::vector<uint8_t> data(4096);
  GgufWriter writer("out.gguf");
  writer.AddTensor("ok", QuantType::kF32, {4}, data.data(), 16);
  const auto expect = [&](const std::function<void()>& action, const std::string& needle) {
    const std::string message = WriterError(action);
    EXPECT_NE(message.find("out.gguf"), std::string::npos) << message;
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  };
  expect([&] { writer.AddTensor("ok", QuantType::kF32, {4}, data.data(), 16); }, "duplicate tensor name 'ok'");
  expect([&] { writer.AddTensor("x", QuantType::kF32, {4}, data.data(), 15); }, "needs 16 bytes, got 15");
  expect([&] { writer.AddTensor("", QuantType::kF32, {4}, data.data(), 16); }, "empty name");
  expect([&] { writer.AddTensor(std::string(64, 'n'), QuantType::kF32, {1}, data.data(), 4); }, "at most 63");
  expect([&] { writer.AddTensor("bad\xff", QuantType::kF32, {1}, data.data(), 4); }, "not valid UTF-8");
  expect([&] { writer.AddTensor("u8", QuantType::kU8, {4}, data.data(), 4); }, "no GGUF id");
  expect([&] { writer.AddTensor("five", QuantType::kF32, {1, 1, 1, 1, 1}, data.data(), 4); }, "at most 4");
  expect([&] { writer.AddTensor("neg", QuantType::kF32, {-1}, data.data(), 0); }, "negative dimension");
  expect([&] { writer.AddTensor("q", QuantType::kQ8_0, {2, 33}, data.data(), 68); }, "multiple of 32");
  expect([&] { writer.AddTensor("q3", QuantType::kQ8_0, {2, 2, 48}, data.data(), 204); }, "multiple of 32");
  // Null data: the bytes come later through WriteNext; a whole-file write without them names the tensor.
  expect([&] {
    GgufWriter deferred("out.gguf");
    deferred.AddTensor("null", QuantType::kF32, {4}, nullptr, 16);
    deferred.Serialize();
  }, "tensor 'null' has no data");
  expect([&] { writer.AddTensor("g", QuantType::kTernary2, {2, 8}, data.data(), 16, Granularity::kGroup, 0); },
         "group size");
  expect([&] { writer.AddTensor("id", static_cast<QuantType>(1000), {4}, data.data(), 16); },
         "unknown tensor type id 1000");
  EXPECT_EQ(GgufFile::FromBytes("out.gguf", writer.Serialize()).tensors().size(), 1u);  // still usable
}

TEST(GgufWriterTest, RejectsBadAlignmentBeforeCreatingAFile) {
  TempDir dir;
  for (const GgufValue& alignment : {GgufValue(uint64_t{32}), GgufValue(uint32_t{48}), GgufValue(uint32_t{0})}) {
    GgufWriter writer(dir.File("out.gguf"));
    writer.metadata().Set("general.alignment", alignment);
    const std::string message = WriterError([&] { writer.Write(); });
    EXPECT_NE(message.find("general.alignment"), std::string::npos) << message;
    EXPECT_TRUE(dir.List().empty());
  }
}

TEST(GgufWriterTest, FailedWriteLeavesNoTemporaryAndKeepsTheOldFile) {
  TempDir dir;
  const std::string path = dir.File("model.gguf");
  const std::vector<uint8_t> data = PatternBytes(1 << 16, 5);
  GgufWriter good(path);
  good.metadata().Set("general.name", "old");
  good.AddTensor("w", QuantType::kF32, {1 << 14}, data.data(), data.size());
  good.Write();
  const std::vector<uint8_t> before = ReadFileBytes(path);

  // The bad key is found only once part of the file has been written.
  GgufWriter bad(path);
  bad.metadata().Set("general.name", "new");
  bad.metadata().Set("", uint32_t{1});
  bad.AddTensor("w", QuantType::kF32, {1 << 14}, data.data(), data.size());
  const std::string message = WriterError([&] { bad.Write(); });
  EXPECT_NE(message.find("model.gguf: a metadata key is empty"), std::string::npos) << message;
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model.gguf"});
  EXPECT_EQ(ReadFileBytes(path), before);

  // An array nested too deep, likewise.
  GgufArray deep(std::vector<uint8_t>{1});
  for (int depth = 0; depth < kMaxArrayDepth; ++depth) deep = GgufArray(std::vector<GgufArray>{deep});
  GgufWriter too_deep(path);
  too_deep.metadata().Set("deep", deep);
  EXPECT_NE(WriterError([&] { too_deep.Write(); }).find("nested more than 8 deep"), std::string::npos);
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model.gguf"});

  // A folder that does not exist.
  GgufWriter nowhere(dir.File("no/such/dir.gguf"));
  EXPECT_THROW(nowhere.Write(), Error);
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model.gguf"});
}

TEST(GgufWriterTest, ManagesLayoutKeys) {
  Layout layout = LayoutForShape(QuantType::kTernary2, {4, 64});
  layout.granularity = Granularity::kGroup;
  layout.group_size = 32;
  const std::vector<uint8_t> packed(static_cast<size_t>(PackedBytes(layout)));
  GgufWriter writer("layouts.gguf");
  writer.metadata().Set("atq.layout.w", "tensor");         // stale value: replaced in place
  writer.metadata().Set("general.name", "x");
  writer.metadata().Set("atq.layout.gone", "channel");     // names no tensor: dropped
  writer.AddTensor("w", QuantType::kTernary2, {4, 64}, packed.data(), packed.size(), Granularity::kGroup, 32);
  writer.AddTensor("v", QuantType::kTernary2, {4, 64}, packed.data(), packed.size(), Granularity::kGroup, 32);
  const Layout per_tensor_layout = LayoutForShape(QuantType::kTernary2, {4, 64});
  const std::vector<uint8_t> per_tensor(static_cast<size_t>(PackedBytes(per_tensor_layout)));
  writer.AddTensor("u", QuantType::kTernary2, {4, 64}, per_tensor.data(), per_tensor.size());  // no key needed
  const GgufFile file = GgufFile::FromBytes("layouts.gguf", writer.Serialize());
  const auto& entries = file.metadata().entries();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].first, "atq.layout.w");
  EXPECT_EQ(entries[0].second, GgufValue("group:32"));
  EXPECT_EQ(entries[1].first, "general.name");
  EXPECT_EQ(entries[2].first, "atq.layout.v");
  EXPECT_EQ(file.Find("v")->layout.granularity, Granularity::kGroup);
  EXPECT_EQ(file.Find("v")->layout.group_size, 32);
  EXPECT_EQ(file.Find("u")->layout.granularity, Granularity::kTensor);
}

// ---- hostile files: one problem each, a clean atq::Error naming the file and the problem ----

TEST(GgufHostileTest, BadMagic) {
  std::vector<uint8_t> bytes = Build(ValidRawFile());
  bytes[3] = 'G';
  ExpectParseError(bytes, {"not a GGUF file"});
  ExpectParseError(std::vector<uint8_t>{'G', 'G'}, {"not a GGUF file"});
  ExpectParseError(std::vector<uint8_t>{}, {"not a GGUF file"});
}

TEST(GgufHostileTest, UnsupportedVersions) {
  RawFile raw = ValidRawFile();
  raw.version = 1;
  ExpectParseError(raw, {"version 1"});
  raw.version = 0;
  ExpectParseError(raw, {"unsupported GGUF version 0"});
  raw.version = 4;
  ExpectParseError(raw, {"unsupported GGUF version 4"});
  raw.version = 0x03000000;  // a big-endian file read as little-endian
  ExpectParseError(raw, {"byte-swapped", "big-endian"});
}

// Every prefix of a valid file up to its last tensor byte fails cleanly.
TEST(GgufHostileTest, TruncatedAnywhere) {
  const std::vector<uint8_t> bytes = Build(ValidRawFile());
  for (size_t size = 0; size < bytes.size(); ++size) {
    const std::string message = ParseError(std::vector<uint8_t>(bytes.begin(), bytes.begin() + size));
    ASSERT_NE(message.find(kHostileName), std::string::npos) << "prefix of " << size << " bytes: " << message;
  }
  // Cut inside a string: the message says what was being read.
  RawFile one_string;
  one_string.kvs.push_back(KvString("general.architecture", "llama"));
  const std::vector<uint8_t> whole = Build(one_string);
  ExpectParseError(std::vector<uint8_t>(whole.begin(), whole.begin() + 66),  // 2 of the value's 5 bytes
                   {"metadata key 'general.architecture'", "truncated: string claims 5 bytes at offset 64"});
  ExpectParseError(std::vector<uint8_t>(bytes.begin(), bytes.end() - 1), {"tensor 'b'", "ends beyond"});
}

TEST(GgufHostileTest, LyingTensorCount) {
  RawFile raw = ValidRawFile();
  raw.tensor_count = uint64_t{1} << 60;
  ExpectParseError(raw, {"claims 1152921504606846976 tensors"});
  raw.tensor_count = 10;  // fits the bytes after the header, not those after the metadata
  ExpectParseError(raw, {"claims 10 tensors", "after the metadata"});
}

TEST(GgufHostileTest, LyingMetadataCount) {
  RawFile raw = ValidRawFile();
  raw.kv_count = std::numeric_limits<uint64_t>::max();
  ExpectParseError(raw, {"claims 18446744073709551615 metadata entries"});
}

TEST(GgufHostileTest, HugeStringLength) {
  RawFile raw = ValidRawFile();
  raw.kvs[0] = Bytes().U64(uint64_t{1} << 63).Text("general.architecture").bytes();
  ExpectParseError(raw, {"claims 9223372036854775808 bytes"});
  raw = ValidRawFile();
  raw.kvs[0] = Kv("general.architecture", 8, Bytes().U64(~uint64_t{0}).Text("llama"));
  ExpectParseError(raw, {"metadata key 'general.architecture'", "claims 18446744073709551615 bytes"});
}

TEST(GgufHostileTest, HugeArrayLength) {
  for (uint32_t element_type : {0u, 7u, 8u, 9u, 12u}) {
    RawFile raw = ValidRawFile();
    raw.kvs.push_back(Kv("big", 9, Bytes().U32(element_type).U64(uint64_t{1} << 60)));
    ExpectParseError(raw, {"metadata key 'big'", "array of 1152921504606846976"});
  }
}

TEST(GgufHostileTest, ArraysNestedTooDeep) {
  Bytes nested;
  for (int depth = 0; depth < 200; ++depth) nested.U32(9).U64(1);
  nested.U32(0).U64(0);
  RawFile raw = ValidRawFile();
  raw.kvs.push_back(Kv("deep", 9, nested));
  ExpectParseError(raw, {"metadata key 'deep'", "nested more than 8 deep"});
}

TEST(GgufHostileTest, DuplicateKey) {
  RawFile raw = ValidRawFile();
  raw.kvs.push_back(KvU32("llama.block_count", 6));
  ExpectParseError(raw, {"duplicate metadata key 'llama.block_count'"});
}

TEST(GgufHostileTest, BadKeys) {
  RawFile raw = ValidRawFile();
  raw.kvs.push_back(KvU32("", 1));
  ExpectParseError(raw, {"empty key"});
  raw = ValidRawFile();
  raw.kvs.push_back(KvU32("bad\xc0\xafkey", 1));  // overlong '/'
  ExpectParseError(raw, {"bad\\xc0\\xafkey", "not valid UTF-8"});
}

TEST(GgufHostileTest, UnknownValueTypes) {
  RawFile raw = ValidRawFile();
  raw.kvs.push_back(Kv("odd", 13, Bytes().U32(0)));
  ExpectParseError(raw, {"metadata key 'odd'", "unknown value type 13"});
  raw = ValidRawFile();
  raw.kvs.push_back(Kv("odd", 9, Bytes().U32(0xFFFFFFFF).U64(0)));
  ExpectParseError(raw, {"unknown value type 4294967295"});
}

TEST(GgufHostileTest, BoolNotZeroOrOne) {
  RawFile raw = ValidRawFile();
  raw.kvs.push_back(Kv("flag", 7, Bytes().U8(2)));
  ExpectParseError(raw, {"metadata key 'flag'", "is 2, not 0 or 1"});
  raw = ValidRawFile();
  raw.kvs.push_back(Kv("flags", 9, Bytes().U32(7).U64(3).U8(1).U8(0).U8(255)));
  ExpectParseError(raw, {"metadata key 'flags'", "is 255, not 0 or 1"});
}

TEST(GgufHostileTest, BadAlignment) {
  RawFile raw = ValidRawFile();
  raw.kvs.push_back(KvU32("general.alignment", 0));
  ExpectParseError(raw, {"general.alignment is 0, not a power of two"});
  raw = ValidRawFile();
  raw.kvs.push_back(KvU32("general.alignment", 48));
  ExpectParseError(raw, {"general.alignment is 48, not a power of two"});
  raw = ValidRawFile();
  raw.kvs.push_back(Kv("general.alignment", 10, Bytes().U64(32)));
  ExpectParseError(raw, {"general.alignment is u64, expected u32"});
}

TEST(GgufHostileTest, DuplicateTensorName) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].name = "a";
  ExpectParseError(raw, {"duplicate tensor name 'a'"});
}

TEST(GgufHostileTest, BadTensorNames) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].name = "";
  ExpectParseError(raw, {"empty name"});
  raw.tensors[1].name = std::string(64, 'x');
  ExpectParseError(raw, {"is 64 bytes, GGUF allows at most 63"});
  raw.tensors[1].name = "\xed\xa0\x80";  // a UTF-16 surrogate
  ExpectParseError(raw, {"not valid UTF-8"});
}

TEST(GgufHostileTest, TooManyDimensions) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].ne = {4, 1, 1, 1, 1};
  ExpectParseError(raw, {"tensor 'b'", "5 dimensions, GGUF allows at most 4"});
}

TEST(GgufHostileTest, DimensionBeyondInt64) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].ne = {uint64_t{1} << 63};
  ExpectParseError(raw, {"tensor 'b'", "dimension 0 is 9223372036854775808"});
}

TEST(GgufHostileTest, ElementCountOverflow) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].ne = {uint64_t{1} << 32, uint64_t{1} << 32};
  ExpectParseError(raw, {"tensor 'b'", "more elements than fit in 64 bits"});
  raw.tensors[1].ne = {0, uint64_t{1} << 40, uint64_t{1} << 40};  // zero elements, but rows * cols overflow
  ExpectParseError(raw, {"tensor 'b'", "more elements than fit in 64 bits"});
  raw.tensors[1].ne = {uint64_t{1} << 62};  // fits int64 as elements, not as f32 bytes
  ExpectParseError(raw, {"tensor 'b'"});
}

TEST(GgufHostileTest, UnknownTensorTypes) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].type = 1000;
  ExpectParseError(raw, {"tensor 'b'", "unknown tensor type id 1000"});
  raw.tensors[1].type = 4;  // Q4_2, removed from ggml
  ExpectParseError(raw, {"unknown tensor type id 4"});
  raw.tensors[1].type = static_cast<uint32_t>(QuantType::kU8);  // atq's, not a GGUF type
  ExpectParseError(raw, {"has no GGUF id"});
}

TEST(GgufHostileTest, RowNotAMultipleOfTheBlockSize) {
  RawFile raw = ValidRawFile();
  raw.tensors[1] = {"q", {33, 2}, static_cast<uint32_t>(QuantType::kQ8_0), 64};
  ExpectParseError(raw, {"tensor 'q'", "q8_0 rows must be a multiple of 32"});
  raw.tensors[1] = {"q", {48, 2, 1}, static_cast<uint32_t>(QuantType::kQ8_0), 64};  // 96 per [2, 48] slab
  ExpectParseError(raw, {"tensor 'q'", "multiple of 32"});
  raw.tensors[1] = {"k", {128}, 12, 64};  // q4_K, a type atq only copies
  ExpectParseError(raw, {"tensor 'k'", "q4_K rows must be a multiple of 256"});
}

TEST(GgufHostileTest, UnalignedOffset) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].offset = 68;
  ExpectParseError(raw, {"tensor 'b'", "data offset 68, not a multiple of the alignment 32"});
}

TEST(GgufHostileTest, TensorBeyondFile) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].offset = 96;
  ExpectParseError(raw, {"tensor 'b'", "ends beyond the end of the file"});
  raw.tensors[1].offset = ~uint64_t{31};  // offset + size wraps around 2^64
  ExpectParseError(raw, {"tensor 'b'", "ends beyond the end of the file"});
}

TEST(GgufHostileTest, DataSectionBeyondFile) {
  RawFile raw = ValidRawFile();
  raw.data_bytes = 0;
  raw.alignment = 1;  // Build adds no padding: the file ends with the tensor infos
  std::vector<uint8_t> bytes = Build(raw);
  ASSERT_NE(bytes.size() % 32, 0u);
  bytes.push_back(0);
  ExpectParseError(bytes, {"data section would start at byte"});
}

TEST(GgufHostileTest, OverlappingTensors) {
  RawFile raw = ValidRawFile();
  raw.tensors[1].offset = 32;  // 'a' covers 0..64
  ExpectParseError(raw, {"tensors 'a' (data bytes 0..64) and 'b' (data bytes 32..48) overlap"});
  raw.tensors.push_back({"c", {4}, 0, 0});  // same start as 'a'
  raw.tensors[1].offset = 64;
  ExpectParseError(raw, {"overlap"});
}

TEST(GgufHostileTest, BadAtqLayouts) {
  const uint32_t t2 = static_cast<uint32_t>(QuantType::kTernary2);
  for (const char* text :
       {"group:0", "group:064", "group:-1", "group:", "rows", "Tensor", "group:99999999999999999999"}) {
    RawFile raw = ValidRawFile();
    raw.kvs.push_back(KvString("atq.layout.b", text));
    raw.tensors[1] = {"b", {8}, t2, 64};
    ExpectParseError(raw, {"atq.layout.b is '", "expected 'tensor', 'channel' or 'group:<N>'"});
  }
  RawFile raw = ValidRawFile();
  raw.kvs.push_back(KvU32("atq.layout.b", 1));
  raw.tensors[1] = {"b", {8}, t2, 64};
  ExpectParseError(raw, {"atq.layout.b is u32, expected a string"});
  raw = ValidRawFile();
  raw.kvs.push_back(KvString("atq.layout.b", "channel"));  // 'b' is f32
  ExpectParseError(raw, {"gives a scale layout to tensor 'b' of type f32"});
  raw = ValidRawFile();
  raw.kvs.push_back(KvString("atq.layout.zz", "channel"));
  ExpectParseError(raw, {"metadata key 'atq.layout.zz' names no tensor"});
}

TEST(GgufHostileTest, AtqTensorTooLarge) {
  RawFile raw = ValidRawFile();
  raw.tensors[1] = {"b", {uint64_t{1} << 30, uint64_t{1} << 30}, static_cast<uint32_t>(QuantType::kTernary2), 64};
  ExpectParseError(raw, {"tensor 'b'", "too large for t2"});
}

TEST(GgufHostileTest, HostileFileOnDiskNamesThePath) {
  TempDir dir;
  RawFile raw = ValidRawFile();
  raw.tensors[1].offset = 32;
  WriteFileBytes(dir.File("bad.gguf"), Build(raw));
  try {
    GgufFile::Open(dir.File("bad.gguf"));
    ADD_FAILURE() << "expected atq::Error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(dir.File("bad.gguf") + ": ", 0), 0u) << e.what();
  }
}

// ---- llama.cpp's files ----

struct Stories260K {
  const char* file;
  uint32_t file_type;        // general.file_type, absent (~0u) in the f32 file
  QuantType matrix;          // attention and ffn_gate/ffn_up weights
  QuantType output;          // output.weight
  uint32_t token_embedding;  // token_embd.weight's ggml id (q5_0 = 6 in the tq2_0 file, not in atq's table)
};
const Stories260K kStories[] = {
    {"stories260K/stories260K-f32.gguf", ~0u, QuantType::kF32, QuantType::kF32, 0},
    {"stories260K/stories260K-q8_0.gguf", 7, QuantType::kQ8_0, QuantType::kQ8_0, 8},
    {"stories260K/stories260K-q4_0.gguf", 2, QuantType::kQ4_0, QuantType::kQ8_0, 2},
    {"stories260K/stories260K-tq2_0.gguf", 37, QuantType::kQ4_0, QuantType::kQ8_0, 6},
};

void ExpectStoriesFacts(const GgufFile& file, const Stories260K& expected) {
  const GgufMetadata& m = file.metadata();
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), 32u);
  EXPECT_EQ(m.GetString("general.architecture"), "llama");
  EXPECT_EQ(m.GetUint("llama.embedding_length"), 64u);
  EXPECT_EQ(m.GetUint("llama.block_count"), 5u);
  EXPECT_EQ(m.GetUint("llama.attention.head_count"), 8u);
  EXPECT_EQ(m.GetUint("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(m.GetUint("llama.feed_forward_length"), 172u);
  EXPECT_EQ(m.GetUint("llama.context_length"), 128u);  // what the converter writes; trained at 512
  EXPECT_EQ(m.GetUint("llama.rope.dimension_count"), 8u);
  EXPECT_FLOAT_EQ(static_cast<float>(m.GetFloat("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_EQ(m.GetString("tokenizer.ggml.model"), "llama");
  const std::vector<std::string>& tokens = m.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 512u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(m.GetFloatArray("tokenizer.ggml.scores").size(), 512u);
  const std::vector<int64_t> token_types = m.GetIntArray("tokenizer.ggml.token_type");
  ASSERT_EQ(token_types.size(), 512u);
  EXPECT_EQ(token_types[0], 2);  // unknown
  EXPECT_EQ(token_types[1], 3);  // control
  EXPECT_EQ(token_types[3], 6);  // byte
  EXPECT_EQ(m.GetUint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(m.GetUint("tokenizer.ggml.eos_token_id"), 2u);
  if (expected.file_type == ~0u) {
    EXPECT_EQ(m.size(), 19u);
    EXPECT_FALSE(m.Contains("general.file_type"));
  } else {
    EXPECT_EQ(m.size(), 21u);
    EXPECT_EQ(m.GetUint("general.file_type"), expected.file_type);
    EXPECT_EQ(m.GetUint("general.quantization_version"), 2u);
  }

  ASSERT_EQ(file.tensors().size(), 48u);  // token_embd, output_norm, output + 5 blocks of 9
  const auto type_of = [&](const std::string& name) {
    const TensorInfo* tensor = file.Find(name);
    EXPECT_NE(tensor, nullptr) << name;
    return tensor == nullptr ? ~0u : static_cast<uint32_t>(tensor->type);
  };
  EXPECT_EQ(type_of("token_embd.weight"), expected.token_embedding);
  EXPECT_EQ(type_of("output.weight"), static_cast<uint32_t>(expected.output));
  EXPECT_EQ(type_of("output_norm.weight"), 0u);
  for (int block = 0; block < 5; ++block) {
    const std::string prefix = fmt::format("blk.{}.", block);
    for (const char* name : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"}) {
      EXPECT_EQ(type_of(prefix + name + ".weight"), static_cast<uint32_t>(expected.matrix)) << prefix << name;
    }
    // ffn_down's rows are 172 long, no multiple of 32: llama.cpp was told to keep it f16 (f32 in the f32 file).
    EXPECT_EQ(type_of(prefix + "ffn_down.weight"), expected.matrix == QuantType::kF32 ? 0u : 1u);
    EXPECT_EQ(type_of(prefix + "attn_norm.weight"), 0u);
    EXPECT_EQ(type_of(prefix + "ffn_norm.weight"), 0u);
  }
  EXPECT_EQ(file.Find("token_embd.weight")->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(file.Find("output_norm.weight")->shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(file.Find("blk.0.attn_k.weight")->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(file.Find("blk.0.ffn_gate.weight")->shape, (std::vector<int64_t>{172, 64}));
  EXPECT_EQ(file.Find("blk.0.ffn_down.weight")->shape, (std::vector<int64_t>{64, 172}));
  uint64_t parameters = 0;
  for (const TensorInfo& tensor : file.tensors()) parameters += CheckedElementCount(tensor.shape, tensor.name);
  EXPECT_EQ(parameters, 64u * 512 * 2 + 64 + 5 * (64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3 + 64 * 2));
}

TEST(GgufFixtureTest, Stories260KFactsAsLlamaCppWroteThem) {
  for (const Stories260K& stories : kStories) {
    ATQ_FIXTURE_OR_SKIP(path, stories.file);
    SCOPED_TRACE(path);
    const GgufFile file = GgufFile::Open(path);
    ExpectStoriesFacts(file, stories);
  }
}

// llama.cpp fell back to Q5_0 for the embedding of its "TQ2_0" file: a row of the table, read and sized.
TEST(GgufFixtureTest, Stories260KTq2FileHoldsQ5_0) {
  ATQ_FIXTURE_OR_SKIP(path, "stories260K/stories260K-tq2_0.gguf");
  const GgufFile file = GgufFile::Open(path);
  const TensorInfo& embedding = *file.Find("token_embd.weight");
  EXPECT_EQ(embedding.type, QuantType::kQ5_0);
  EXPECT_EQ(GgmlTypeName(static_cast<uint32_t>(embedding.type)), "q5_0");
  EXPECT_EQ(embedding.nbytes, 512u * 64 / 32 * 22);
}

// read -> write -> read keeps everything; for llama.cpp's files atq's writer even reproduces the bytes,
// since both write tensors back to back, each padded to the alignment.
TEST(GgufFixtureTest, Stories260KReadWriteReadIsIdentical) {
  for (const Stories260K& stories : kStories) {
    ATQ_FIXTURE_OR_SKIP(path, stories.file);
    SCOPED_TRACE(path);
    const GgufFile original = GgufFile::Open(path);
    TempDir dir;
    GgufWriter writer(dir.File("copy.gguf"));
    writer.metadata() = original.metadata();
    for (const TensorInfo& tensor : original.tensors()) writer.AddTensor(tensor, original.Data(tensor));
    writer.Write();
    const GgufFile copy = GgufFile::Open(dir.File("copy.gguf"));
    EXPECT_EQ(copy.metadata(), original.metadata());
    ASSERT_EQ(copy.tensors().size(), original.tensors().size());
    for (size_t i = 0; i < copy.tensors().size(); ++i) {
      const TensorInfo& a = original.tensors()[i];
      const TensorInfo& b = copy.tensors()[i];
      EXPECT_EQ(b.name, a.name);
      EXPECT_EQ(b.type, a.type);
      EXPECT_EQ(b.shape, a.shape);
      EXPECT_EQ(b.offset, a.offset);
      ASSERT_EQ(b.nbytes, a.nbytes);
      EXPECT_EQ(0, std::memcmp(copy.Data(b), original.Data(a), a.nbytes)) << a.name;
    }
    EXPECT_EQ(ReadFileBytes(dir.File("copy.gguf")), ReadFileBytes(path));
  }
}

// atq's Q8_0 dequantizer on llama.cpp's bytes gives back the f32 weights within Q8_0's error: half a step d
// per weight, plus the f16 rounding of d (up to 2^-11 relative) times the largest code, 127.
TEST(GgufFixtureTest, Stories260KQ8DequantizesToTheF32Weights) {
  ATQ_FIXTURE_OR_SKIP(q8_path, "stories260K/stories260K-q8_0.gguf");
  ATQ_FIXTURE_OR_SKIP(f32_path, "stories260K/stories260K-f32.gguf");
  const GgufFile q8 = GgufFile::Open(q8_path);
  const GgufFile f32 = GgufFile::Open(f32_path);
  constexpr double kStepsPerScale = 0.5 + 127.0 / 2048.0;
  int checked = 0;
  for (const TensorInfo& tensor : q8.tensors()) {
    if (tensor.type != QuantType::kQ8_0) continue;
    const TensorInfo* reference = f32.Find(tensor.name);
    ASSERT_NE(reference, nullptr) << tensor.name;
    ASSERT_EQ(reference->shape, tensor.shape);
    const std::vector<float> got = Dequantize(tensor.layout, q8.Data(tensor), static_cast<int64_t>(tensor.nbytes));
    const std::vector<float> want = Dequantize(reference->layout, f32.Data(*reference),
                                               static_cast<int64_t>(reference->nbytes));
    ASSERT_EQ(got.size(), want.size());
    const uint8_t* blocks = q8.Data(tensor);
    for (size_t i = 0; i < got.size(); ++i) {
      uint16_t d_bits;
      std::memcpy(&d_bits, blocks + (i / 32) * sizeof(BlockQ8_0), 2);
      const double d = std::fabs(F16ToF32(d_bits));
      ASSERT_LE(std::fabs(static_cast<double>(got[i]) - want[i]), kStepsPerScale * d * (1 + 1e-6) + 1e-12)
          << tensor.name << " weight " << i;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 1 + 1 + 5 * 6);  // output, token_embd, 6 matrices per block
}

}  // namespace
}  // namespace atq
