// GGUF parsing with every count and length checked against the bytes left before anything is allocated,
// and the matching writer.
#include "io/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include <fmt/format.h>

#include "io/atomic_file.h"
#include "util/error.h"
#include "util/utf8.h"
#include "util/strings.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.cc copies little-endian numbers straight from the file: it needs a little-endian host"
#endif

namespace atq {
namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
// The fewest bytes one item can take in a file, used to refuse counts that cannot fit before reserving:
// a key-value pair is a key length, one key byte, a type and a 1-byte value; a tensor info is a name
// length, one name byte, n_dims, a type and an offset.
constexpr uint64_t kMinKeyValueBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;
// atq's packed formats size their scales per row and per group; no real tensor comes near 2^50 weights, and
// below it no size the format table computes for them can overflow int64.
constexpr int64_t kMaxAtqElements = int64_t{1} << 50;

// ---- ggml's tensor types: what a GGUF file may hold, whether or not atq can convert it ----

struct GgmlTypeRow {
  uint32_t id;
  std::string_view name;
  int64_t block_size;  // weights per block
  int64_t type_size;   // bytes per block
};
// ggml.c type_traits for the ids ggml-org's gguf.md lists; the gaps are ids ggml removed.
constexpr GgmlTypeRow kGgmlTypes[] = {
    {0, "f32", 1, 4},          {1, "f16", 1, 2},          {2, "q4_0", 32, 18},       {3, "q4_1", 32, 20},
    {6, "q5_0", 32, 22},       {7, "q5_1", 32, 24},       {8, "q8_0", 32, 34},       {9, "q8_1", 32, 36},
    {10, "q2_K", 256, 84},     {11, "q3_K", 256, 110},    {12, "q4_K", 256, 144},    {13, "q5_K", 256, 176},
    {14, "q6_K", 256, 210},    {15, "q8_K", 256, 292},    {16, "iq2_xxs", 256, 66},  {17, "iq2_xs", 256, 74},
    {18, "iq3_xxs", 256, 98},  {19, "iq1_s", 256, 50},    {20, "iq4_nl", 32, 18},    {21, "iq3_s", 256, 110},
    {22, "iq2_s", 256, 82},    {23, "iq4_xs", 256, 136},  {24, "i8", 1, 1},          {25, "i16", 1, 2},
    {26, "i32", 1, 4},         {27, "i64", 1, 8},         {28, "f64", 1, 8},         {29, "iq1_m", 256, 56},
    {30, "bf16", 1, 2},        {34, "tq1_0", 256, 54},    {35, "tq2_0", 256, 66},    {39, "mxfp4", 32, 17},
};

const GgmlTypeRow* FindGgmlType(uint32_t id) {
  for (const GgmlTypeRow& row : kGgmlTypes) {
    if (row.id == id) return &row;
  }
  return nullptr;
}

bool IsAtqPackedType(uint32_t id) {
  const TypeTraits* traits = FindTraits(id);
  return traits != nullptr && (traits->family == TypeFamily::kTernary || traits->family == TypeFamily::kUniform);
}

// ---- text helpers ----


// A name or key from a file, safe to print: bytes outside printable ASCII as \xNN, long text cut short.
std::string Printable(std::string_view text) {
  constexpr size_t kMaxShown = 80;
  std::string out;
  for (size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (text.size() > kMaxShown) out += fmt::format("... ({} bytes)", text.size());
  return out;
}

// ---- value helpers ----

uint64_t MinBytesPerElement(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
    case GgufType::kString:  // the length alone
      return 8;
    case GgufType::kArray:  // element type and count
      return 12;
  }
  return 1;
}

template <typename T>
bool SameBits(const T& a, const T& b) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::memcmp(&a, &b, sizeof(T)) == 0;
  } else {
    return a == b;
  }
}

template <typename T>
bool SameElements(const std::vector<T>& a, const std::vector<T>& b) {
  if constexpr (std::is_floating_point_v<T>) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
  } else {
    return a == b;
  }
}

std::string_view ValueTypeName(const GgufValue& value) {
  if (value.type() != GgufType::kArray) return GgufTypeName(value.type());
  return "an array";
}

uint64_t AlignUp(uint64_t offset, uint64_t alignment) {
  return (offset + alignment - 1) / alignment * alignment;
}

bool IsPowerOfTwo(uint64_t value) { return value != 0 && (value & (value - 1)) == 0; }

// What a tensor's name, type and shape must satisfy in any GGUF file, and its byte size; shared by reader
// and writer so that whatever one accepts the other does too. `layout` arrives with the granularity and
// group size (atq types only) and leaves with rows and cols filled in. Errors start with `what`.
uint64_t CheckTensor(const std::string& what, uint32_t type_id, const std::vector<int64_t>& shape,
                     Layout& layout) {
  const GgmlTypeRow* ggml = FindGgmlType(type_id);
  const bool is_atq = IsAtqPackedType(type_id);
  if (ggml == nullptr && !is_atq) {
    if (type_id == static_cast<uint32_t>(QuantType::kU8) || type_id == static_cast<uint32_t>(QuantType::kBool)) {
      Fail("{}: type {} has no GGUF id (ggml has none; store it as i8)", what, GgmlTypeName(type_id));
    }
    Fail("{}: unknown tensor type id {}", what, type_id);
  }
  Require(shape.size() <= static_cast<size_t>(kGgufMaxDims), "{}: {} dimensions, GGUF allows at most {}", what,
          shape.size(), kGgufMaxDims);
  // The product of the non-zero dims bounds every partial product (rows, cols), including for shapes with
  // a zero somewhere, whose element count alone would not.
  int64_t nonzero_product = 1;
  for (int64_t dim : shape) {
    Require(dim >= 0, "{}: negative dimension in shape {}", what, ShapeString(shape));
    if (dim == 0) continue;
    Require(nonzero_product <= INT64_MAX / dim, "{}: shape {} has more elements than fit in 64 bits", what,
            ShapeString(shape));
    nonzero_product *= dim;
  }
  const int64_t elements = CheckedElementCount(shape, what);
  const int64_t row_length = shape.empty() ? 1 : shape.back();  // ggml's ne[0]
  const QuantType type = static_cast<QuantType>(type_id);
  const Granularity granularity = layout.granularity;
  const int64_t group_size = layout.group_size;
  layout = LayoutForShape(type, shape);
  if (is_atq) {
    Require(nonzero_product <= kMaxAtqElements, "{}: shape {} is too large for {}", what, ShapeString(shape),
            GgmlTypeName(type_id));
    layout.granularity = granularity;
    layout.group_size = group_size;
  } else {
    Require(row_length % ggml->block_size == 0,
            "{}: {} rows must be a multiple of {} long, shape {} has rows of {}", what, ggml->name,
            ggml->block_size, ShapeString(shape), row_length);
    const int64_t blocks = elements / ggml->block_size;
    Require(blocks <= INT64_MAX / ggml->type_size, "{}: shape {} of {} needs more bytes than fit in 64 bits",
            what, ShapeString(shape), ggml->name);
    if (FindTraits(type_id) == nullptr) return static_cast<uint64_t>(blocks * ggml->type_size);
  }
  try {
    return static_cast<uint64_t>(PackedBytes(layout));
  } catch (const Error& error) {
    Fail("{}: {}", what, error.what());
  }
}

void CheckTensorName(const std::string& where, std::string_view name) {
  Require(!name.empty(), "{}: a tensor has an empty name", where);
  Require(IsValidUtf8(name), "{}: tensor name '{}' is not valid UTF-8", where, Printable(name));
  Require(name.size() <= kMaxTensorNameBytes, "{}: tensor name '{}' is {} bytes, GGUF allows at most {}", where,
          Printable(name), name.size(), kMaxTensorNameBytes);
}

// ---- reading ----

// Reads little-endian fields from the bytes, refusing to step past the end. Errors read
// "PATH: CONTEXT: what is wrong", where the context says which key or tensor is being read.
class ByteReader {
 public:
  ByteReader(const std::string& path, const uint8_t* bytes, uint64_t size)
      : path_(path), bytes_(bytes), size_(size) {}

  uint64_t position() const { return position_; }
  uint64_t remaining() const { return size_ - position_; }
  void set_context(std::string context) { context_ = std::move(context); }

  template <typename... Args>
  [[noreturn]] void Fail(fmt::format_string<Args...> format, Args&&... args) const {
    throw Error(fmt::format("{}: {}: {}", path_, context_, fmt::format(format, std::forward<Args>(args)...)));
  }

  void Need(uint64_t count, std::string_view what) const {
    if (count > remaining()) {
      Fail("truncated: {} needs {} bytes at offset {}, the file has {} left", what, count, position_,
           remaining());
    }
  }

  template <typename T>
  T Read(std::string_view what) {
    Need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_ + position_, sizeof(T));
    position_ += sizeof(T);
    return value;
  }

  std::string_view ReadBytes(uint64_t count, std::string_view what) {
    Need(count, what);
    std::string_view view(reinterpret_cast<const char*>(bytes_ + position_), static_cast<size_t>(count));
    position_ += count;
    return view;
  }

  std::string_view ReadString(std::string_view what) {
    const uint64_t length = Read<uint64_t>(what);
    if (length > remaining()) {
      Fail("truncated: {} claims {} bytes at offset {}, the file has {} left", what, length, position_,
           remaining());
    }
    return ReadBytes(length, what);
  }

  // `count` elements of T copied in one go (the host is little-endian, as the file).
  template <typename T>
  std::vector<T> ReadNumbers(uint64_t count) {
    const std::string_view bytes = ReadBytes(count * sizeof(T), "array elements");
    std::vector<T> out(static_cast<size_t>(count));
    if (count > 0) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }

  bool ReadBool() {
    const auto byte = Read<uint8_t>("bool");
    if (byte > 1) Fail("bool at offset {} is {}, not 0 or 1", position_ - 1, byte);
    return byte == 1;
  }

  GgufType ReadType(std::string_view what) {
    const auto id = Read<uint32_t>(what);
    if (id >= kGgufTypeCount) Fail("unknown value type {} at offset {}", id, position_ - 4);
    return static_cast<GgufType>(id);
  }

  GgufValue ReadValue(GgufType type) {
    switch (type) {
      case GgufType::kUint8: return Read<uint8_t>("u8");
      case GgufType::kInt8: return Read<int8_t>("i8");
      case GgufType::kUint16: return Read<uint16_t>("u16");
      case GgufType::kInt16: return Read<int16_t>("i16");
      case GgufType::kUint32: return Read<uint32_t>("u32");
      case GgufType::kInt32: return Read<int32_t>("i32");
      case GgufType::kFloat32: return Read<float>("f32");
      case GgufType::kBool: return ReadBool();
      case GgufType::kString: return std::string(ReadString("string"));
      case GgufType::kArray: return ReadArray(1);
      case GgufType::kUint64: return Read<uint64_t>("u64");
      case GgufType::kInt64: return Read<int64_t>("i64");
      case GgufType::kFloat64: return Read<double>("f64");
    }
    Fail("unknown value type {}", static_cast<uint32_t>(type));
  }

  // An array at nesting `depth` (1 for a key's own array).
  GgufArray ReadArray(int depth) {
    if (depth > kMaxArrayDepth) Fail("arrays nested more than {} deep at offset {}", kMaxArrayDepth, position_);
    const GgufType element_type = ReadType("array element type");
    const uint64_t count = Read<uint64_t>("array length");
    const uint64_t min_bytes = MinBytesPerElement(element_type);
    if (count > remaining() / min_bytes) {
      Fail("array of {} {} elements at offset {} needs at least {} bytes per element, the file has {} left",
           count, GgufTypeName(element_type), position_ - 12, min_bytes, remaining());
    }
    switch (element_type) {
      case GgufType::kUint8: return GgufArray(ReadNumbers<uint8_t>(count));
      case GgufType::kInt8: return GgufArray(ReadNumbers<int8_t>(count));
      case GgufType::kUint16: return GgufArray(ReadNumbers<uint16_t>(count));
      case GgufType::kInt16: return GgufArray(ReadNumbers<int16_t>(count));
      case GgufType::kUint32: return GgufArray(ReadNumbers<uint32_t>(count));
      case GgufType::kInt32: return GgufArray(ReadNumbers<int32_t>(count));
      case GgufType::kFloat32: return GgufArray(ReadNumbers<float>(count));
      case GgufType::kUint64: return GgufArray(ReadNumbers<uint64_t>(count));
      case GgufType::kInt64: return GgufArray(ReadNumbers<int64_t>(count));
      case GgufType::kFloat64: return GgufArray(ReadNumbers<double>(count));
      case GgufType::kBool: {
        std::vector<bool> elements(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) elements[i] = ReadBool();
        return GgufArray(std::move(elements));
      }
      case GgufType::kString: {
        std::vector<std::string> elements;
        elements.reserve(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) elements.emplace_back(ReadString("string"));
        return GgufArray(std::move(elements));
      }
      case GgufType::kArray: {
        std::vector<GgufArray> elements;
        elements.reserve(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) elements.push_back(ReadArray(depth + 1));
        return GgufArray(std::move(elements));
      }
    }
    Fail("unknown array element type {}", static_cast<uint32_t>(element_type));
  }

 private:
  const std::string& path_;
  const uint8_t* bytes_;
  uint64_t size_;
  uint64_t position_ = 0;
  std::string context_ = "header";
};

// ---- writing ----

class VectorSink {
 public:
  explicit VectorSink(std::vector<uint8_t>& out) : out_(out) {}
  void Write(const void* data, size_t size) {
    const auto* bytes = static_cast<const uint8_t*>(data);
    out_.insert(out_.end(), bytes, bytes + size);
  }
  void WriteZeros(size_t count) { out_.resize(out_.size() + count, 0); }
  size_t bytes_written() const { return out_.size(); }

 private:
  std::vector<uint8_t>& out_;
};

template <typename Sink, typename T>
void WriteNumber(Sink& sink, T value) {
  sink.Write(&value, sizeof(T));
}

template <typename Sink>
void WriteString(Sink& sink, std::string_view text) {
  WriteNumber<Sink, uint64_t>(sink, text.size());
  sink.Write(text.data(), text.size());
}

template <typename Sink>
void WriteArray(Sink& sink, const GgufArray& array, int depth, const std::string& what) {
  Require(depth <= kMaxArrayDepth, "{}: arrays nested more than {} deep", what, kMaxArrayDepth);
  WriteNumber<Sink, uint32_t>(sink, static_cast<uint32_t>(array.element_type()));
  WriteNumber<Sink, uint64_t>(sink, array.size());
  std::visit(
      [&](const auto& elements) {
        using Element = typename std::decay_t<decltype(elements)>::value_type;
        if constexpr (std::is_same_v<Element, bool>) {
          for (bool element : elements) WriteNumber<Sink, uint8_t>(sink, element ? 1 : 0);
        } else if constexpr (std::is_same_v<Element, std::string>) {
          for (const std::string& element : elements) WriteString(sink, element);
        } else if constexpr (std::is_same_v<Element, GgufArray>) {
          for (const GgufArray& element : elements) WriteArray(sink, element, depth + 1, what);
        } else {
          sink.Write(elements.data(), elements.size() * sizeof(Element));
        }
      },
      array.elements());
}

template <typename Sink>
void WriteValue(Sink& sink, const GgufValue& value, const std::string& what) {
  WriteNumber<Sink, uint32_t>(sink, static_cast<uint32_t>(value.type()));
  std::visit(
      [&](const auto& payload) {
        using Payload = std::decay_t<decltype(payload)>;
        if constexpr (std::is_same_v<Payload, bool>) {
          WriteNumber<Sink, uint8_t>(sink, payload ? 1 : 0);
        } else if constexpr (std::is_same_v<Payload, std::string>) {
          WriteString(sink, payload);
        } else if constexpr (std::is_same_v<Payload, GgufArray>) {
          WriteArray(sink, payload, 1, what);
        } else {
          WriteNumber<Sink, Payload>(sink, payload);
        }
      },
      value.variant());
}

}  // namespace

// ---- values ----

std::string_view GgufTypeName(GgufType type) {
  switch (type) {
    case GgufType::kUint8: return "u8";
    case GgufType::kInt8: return "i8";
    case GgufType::kUint16: return "u16";
    case GgufType::kInt16: return "i16";
    case GgufType::kUint32: return "u32";
    case GgufType::kInt32: return "i32";
    case GgufType::kFloat32: return "f32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "string";
    case GgufType::kArray: return "array";
    case GgufType::kUint64: return "u64";
    case GgufType::kInt64: return "i64";
    case GgufType::kFloat64: return "f64";
  }
  return "unknown";
}

size_t GgufArray::size() const {
  return std::visit([](const auto& elements) { return elements.size(); }, elements_);
}

bool operator==(const GgufArray& a, const GgufArray& b) {
  if (a.elements_.index() != b.elements_.index()) return false;
  return std::visit(
      [&](const auto& left) {
        using Vector = std::decay_t<decltype(left)>;
        return SameElements(left, std::get<Vector>(b.elements_));
      },
      a.elements_);
}

bool operator==(const GgufValue& a, const GgufValue& b) {
  if (a.value_.index() != b.value_.index()) return false;
  return std::visit(
      [&](const auto& left) {
        using Payload = std::decay_t<decltype(left)>;
        return SameBits(left, std::get<Payload>(b.value_));
      },
      a.value_);
}

uint64_t GgufValue::AsUint(std::string_view what) const {
  return std::visit(
      [&](const auto& payload) -> uint64_t {
        using Payload = std::decay_t<decltype(payload)>;
        if constexpr (std::is_integral_v<Payload> && !std::is_same_v<Payload, bool>) {
          if constexpr (std::is_signed_v<Payload>) {
            if (payload < 0) atq::Fail("{} is {} ({}), expected a value >= 0", what, payload, ValueTypeName(*this));
          }
          return static_cast<uint64_t>(payload);
        } else {
          atq::Fail("{} is {}, expected an unsigned integer", what, ValueTypeName(*this));
        }
      },
      value_);
}

int64_t GgufValue::AsInt(std::string_view what) const {
  return std::visit(
      [&](const auto& payload) -> int64_t {
        using Payload = std::decay_t<decltype(payload)>;
        if constexpr (std::is_same_v<Payload, uint64_t>) {
          if (payload > static_cast<uint64_t>(INT64_MAX)) {
            atq::Fail("{} is {} (u64), which does not fit int64", what, payload);
          }
          return static_cast<int64_t>(payload);
        } else if constexpr (std::is_integral_v<Payload> && !std::is_same_v<Payload, bool>) {
          return static_cast<int64_t>(payload);
        } else {
          atq::Fail("{} is {}, expected an integer", what, ValueTypeName(*this));
        }
      },
      value_);
}

double GgufValue::AsFloat(std::string_view what) const {
  if (const auto* value = get_if<float>()) return *value;
  if (const auto* value = get_if<double>()) return *value;
  Fail("{} is {}, expected f32 or f64", what, ValueTypeName(*this));
}

bool GgufValue::AsBool(std::string_view what) const {
  if (const auto* value = get_if<bool>()) return *value;
  Fail("{} is {}, expected bool", what, ValueTypeName(*this));
}

const std::string& GgufValue::AsString(std::string_view what) const {
  if (const auto* value = get_if<std::string>()) return *value;
  Fail("{} is {}, expected a string", what, ValueTypeName(*this));
}

const GgufArray& GgufValue::AsArray(std::string_view what) const {
  if (const auto* value = get_if<GgufArray>()) return *value;
  Fail("{} is {}, expected an array", what, ValueTypeName(*this));
}

// ---- metadata ----

void GgufMetadata::Set(std::string key, GgufValue value) {
  const auto found = index_.find(key);
  if (found != index_.end()) {
    entries_[found->second].second = std::move(value);
    return;
  }
  index_.emplace(key, entries_.size());
  entries_.emplace_back(std::move(key), std::move(value));
}

bool GgufMetadata::Erase(std::string_view key) {
  const auto found = index_.find(std::string(key));
  if (found == index_.end()) return false;
  const size_t position = found->second;
  index_.erase(found);
  entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(position));
  for (auto& [name, index] : index_) {
    if (index > position) --index;
  }
  return true;
}

const GgufValue* GgufMetadata::Find(std::string_view key) const {
  const auto found = index_.find(std::string(key));
  return found == index_.end() ? nullptr : &entries_[found->second].second;
}

std::string GgufMetadata::Describe(std::string_view key) const {
  return fmt::format("{}: metadata key '{}'", source_, Printable(key));
}

const GgufValue& GgufMetadata::Get(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) Fail("{} is missing", Describe(key));
  return *value;
}

const std::string& GgufMetadata::GetString(std::string_view key) const { return Get(key).AsString(Describe(key)); }
uint64_t GgufMetadata::GetUint(std::string_view key) const { return Get(key).AsUint(Describe(key)); }
int64_t GgufMetadata::GetInt(std::string_view key) const { return Get(key).AsInt(Describe(key)); }
double GgufMetadata::GetFloat(std::string_view key) const { return Get(key).AsFloat(Describe(key)); }
bool GgufMetadata::GetBool(std::string_view key) const { return Get(key).AsBool(Describe(key)); }
const GgufArray& GgufMetadata::GetArray(std::string_view key) const { return Get(key).AsArray(Describe(key)); }

const std::vector<std::string>& GgufMetadata::GetStringArray(std::string_view key) const {
  const GgufArray& array = GetArray(key);
  const auto* strings = array.get_if<std::string>();
  if (strings == nullptr) {
    Fail("{} is an array of {}, expected strings", Describe(key), GgufTypeName(array.element_type()));
  }
  return *strings;
}

std::vector<float> GgufMetadata::GetFloatArray(std::string_view key) const {
  const GgufArray& array = GetArray(key);
  if (const auto* floats = array.get_if<float>()) return *floats;
  if (const auto* doubles = array.get_if<double>()) return std::vector<float>(doubles->begin(), doubles->end());
  Fail("{} is an array of {}, expected f32 or f64", Describe(key), GgufTypeName(array.element_type()));
}

std::vector<int64_t> GgufMetadata::GetIntArray(std::string_view key) const {
  const GgufArray& array = GetArray(key);
  return std::visit(
      [&](const auto& elements) -> std::vector<int64_t> {
        using Element = typename std::decay_t<decltype(elements)>::value_type;
        if constexpr (std::is_integral_v<Element> && !std::is_same_v<Element, bool>) {
          std::vector<int64_t> out;
          out.reserve(elements.size());
          for (size_t i = 0; i < elements.size(); ++i) {
            if constexpr (std::is_same_v<Element, uint64_t>) {
              if (elements[i] > static_cast<uint64_t>(INT64_MAX)) {
                Fail("{}: element {} is {}, which does not fit int64", Describe(key), i, elements[i]);
              }
            }
            out.push_back(static_cast<int64_t>(elements[i]));
          }
          return out;
        } else {
          Fail("{} is an array of {}, expected integers", Describe(key), GgufTypeName(array.element_type()));
        }
      },
      array.elements());
}

// ---- type names and layouts ----

std::string GgmlTypeName(uint32_t id) {
  if (const TypeTraits* traits = FindTraits(id)) return std::string(traits->name);
  if (const GgmlTypeRow* row = FindGgmlType(id)) return std::string(row->name);
  return fmt::format("type{}", id);
}


// ---- the reader ----

GgufFile GgufFile::Open(const std::string& path) { return Load(MappedFile::Open(path)); }

GgufFile GgufFile::FromBytes(std::string name, std::vector<uint8_t> bytes) {
  return Load(MappedFile::FromBytes(std::move(name), std::move(bytes)));
}

GgufFile GgufFile::Load(MappedFile source) {
  GgufFile file;
  file.path_ = source.path();
  file.mapped_ = std::move(source);
  file.bytes_ = file.mapped_.data();
  file.size_ = file.mapped_.size();
  file.Parse();
  return file;
}

void GgufFile::Parse() {
  ByteReader reader(path_, bytes_, size_);

  // Header.
  Require(size_ >= 4 && std::memcmp(bytes_, kMagic, 4) == 0, "{}: not a GGUF file: it does not start with 'GGUF'",
          path_);
  reader.ReadBytes(4, "magic");
  version_ = reader.Read<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    Require(version_ == 0 || (version_ & 0xFFFFu) != 0,
            "{}: GGUF version {:#x} looks byte-swapped: a big-endian file, which atq does not read", path_,
            version_);
    Require(version_ != 1, "{}: GGUF version 1 (32-bit counts) is not supported; convert it to version 3",
            path_);
    Fail("{}: unsupported GGUF version {} (atq reads 2 and 3)", path_, version_);
  }
  const auto tensor_count = reader.Read<uint64_t>("tensor count");
  const auto kv_count = reader.Read<uint64_t>("metadata count");
  Require(kv_count <= reader.remaining() / kMinKeyValueBytes,
          "{}: header claims {} metadata entries, more than the {} bytes after it can hold", path_, kv_count,
          reader.remaining());
  Require(tensor_count <= reader.remaining() / kMinTensorInfoBytes,
          "{}: header claims {} tensors, more than the {} bytes after it can hold", path_, tensor_count,
          reader.remaining());

  // Metadata.
  metadata_ = GgufMetadata(path_);
  for (uint64_t i = 0; i < kv_count; ++i) {
    reader.set_context(fmt::format("metadata entry {}", i));
    const std::string_view key = reader.ReadString("key");
    Require(!key.empty(), "{}: metadata entry {} has an empty key", path_, i);
    Require(IsValidUtf8(key), "{}: metadata key '{}' is not valid UTF-8", path_, Printable(key));
    Require(!metadata_.Contains(key), "{}: duplicate metadata key '{}'", path_, Printable(key));
    reader.set_context(fmt::format("metadata key '{}'", Printable(key)));
    const GgufType type = reader.ReadType("value type");
    metadata_.Set(std::string(key), reader.ReadValue(type));
  }
  if (const GgufValue* alignment = metadata_.Find(kGgufAlignmentKey)) {
    const auto* value = alignment->get_if<uint32_t>();
    Require(value != nullptr, "{}: {} is {}, expected u32", path_, kGgufAlignmentKey,
            GgufTypeName(alignment->type()));
    Require(IsPowerOfTwo(*value), "{}: {} is {}, not a power of two", path_, kGgufAlignmentKey, *value);
    alignment_ = *value;
  }

  // Tensor infos.
  reader.set_context("tensor infos");
  Require(tensor_count <= reader.remaining() / kMinTensorInfoBytes,
          "{}: header claims {} tensors, more than the {} bytes after the metadata can hold", path_, tensor_count,
          reader.remaining());
  tensors_.reserve(static_cast<size_t>(tensor_count));
  by_name_.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    reader.set_context(fmt::format("tensor {}", i));
    TensorInfo tensor;
    tensor.name = std::string(reader.ReadString("name"));
    CheckTensorName(path_, tensor.name);
    Require(by_name_.count(tensor.name) == 0, "{}: duplicate tensor name '{}'", path_, tensor.name);
    const std::string what = fmt::format("{}: tensor '{}'", path_, tensor.name);
    reader.set_context(fmt::format("tensor '{}'", tensor.name));

    const auto dims = reader.Read<uint32_t>("dimension count");
    Require(dims <= static_cast<uint32_t>(kGgufMaxDims), "{}: {} dimensions, GGUF allows at most {}", what, dims,
            kGgufMaxDims);
    tensor.shape.resize(dims);
    for (uint32_t d = 0; d < dims; ++d) {
      const auto extent = reader.Read<uint64_t>("dimension");
      Require(extent <= static_cast<uint64_t>(INT64_MAX), "{}: dimension {} is {}, more than int64 holds", what, d,
              extent);
      tensor.shape[dims - 1 - d] = static_cast<int64_t>(extent);  // ggml's ne[0] is innermost
    }
    const auto type_id = reader.Read<uint32_t>("type");
    tensor.offset = reader.Read<uint64_t>("offset");

    if (IsAtqPackedType(type_id)) {
      if (const GgufValue* layout = metadata_.Find(std::string(kGgufLayoutKeyPrefix) + tensor.name)) {
        const auto* text = layout->get_if<std::string>();
        Require(text != nullptr, "{}: {}{} is {}, expected a string", path_, kGgufLayoutKeyPrefix, tensor.name,
                GgufTypeName(layout->type()));
        Require(ParseGranularity(*text, tensor.layout) && GranularityString(tensor.layout) == *text,
                "{}: {}{} is '{}', expected 'tensor', 'channel' or 'group:<N>' with N > 0", path_,
                kGgufLayoutKeyPrefix, tensor.name, Printable(*text));
      }
    }
    tensor.nbytes = CheckTensor(what, type_id, tensor.shape, tensor.layout);
    tensor.type = static_cast<QuantType>(type_id);
    by_name_.emplace(tensor.name, tensors_.size());
    tensors_.push_back(std::move(tensor));
  }

  // Every atq.layout.* key describes a tensor that uses it.
  for (const auto& [key, value] : metadata_) {
    if (!StartsWith(key, kGgufLayoutKeyPrefix)) continue;
    const std::string_view name = std::string_view(key).substr(kGgufLayoutKeyPrefix.size());
    const TensorInfo* tensor = Find(name);
    Require(tensor != nullptr, "{}: metadata key '{}' names no tensor in the file", path_, Printable(key));
    Require(IsAtqPackedType(static_cast<uint32_t>(tensor->type)),
            "{}: metadata key '{}' gives a scale layout to tensor '{}' of type {}, which has none", path_,
            Printable(key), tensor->name, GgmlTypeName(static_cast<uint32_t>(tensor->type)));
  }

  // The data section and where each tensor lies in it.
  data_offset_ = AlignUp(reader.position(), alignment_);
  if (tensors_.empty()) return;
  Require(data_offset_ <= size_, "{}: truncated: the data section would start at byte {}, the file has {}",
          path_, data_offset_, size_);
  const uint64_t data_size = size_ - data_offset_;
  for (const TensorInfo& tensor : tensors_) {
    Require(tensor.offset % alignment_ == 0, "{}: tensor '{}' starts at data offset {}, not a multiple of the "
            "alignment {}", path_, tensor.name, tensor.offset, alignment_);
    Require(tensor.offset <= data_size && tensor.nbytes <= data_size - tensor.offset,
            "{}: tensor '{}' ({} bytes at data offset {}) ends beyond the end of the file (data section of {} "
            "bytes)", path_, tensor.name, tensor.nbytes, tensor.offset, data_size);
  }
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::make_pair(tensors_[a].offset, tensors_[a].nbytes) <
           std::make_pair(tensors_[b].offset, tensors_[b].nbytes);
  });
  const TensorInfo* previous = nullptr;  // the non-empty tensor ending last so far
  for (size_t index : order) {
    const TensorInfo& tensor = tensors_[index];
    if (tensor.nbytes == 0) continue;
    if (previous != nullptr) {
      Require(tensor.offset >= previous->offset + previous->nbytes,
              "{}: tensors '{}' (data bytes {}..{}) and '{}' (data bytes {}..{}) overlap", path_, previous->name,
              previous->offset, previous->offset + previous->nbytes, tensor.name, tensor.offset,
              tensor.offset + tensor.nbytes);
    }
    if (previous == nullptr || tensor.offset + tensor.nbytes > previous->offset + previous->nbytes) {
      previous = &tensor;
    }
  }
}

const TensorInfo* GgufFile::Find(std::string_view name) const {
  const auto found = by_name_.find(std::string(name));
  return found == by_name_.end() ? nullptr : &tensors_[found->second];
}

const uint8_t* GgufFile::Data(const TensorInfo& tensor) const {
  const uint64_t data_size = size_ > data_offset_ ? size_ - data_offset_ : 0;
  Require(tensor.offset <= data_size && tensor.nbytes <= data_size - tensor.offset,
          "{}: tensor '{}' ({} bytes at data offset {}) is not inside the data section of {} bytes", path_,
          tensor.name, tensor.nbytes, tensor.offset, data_size);
  return bytes_ + data_offset_ + tensor.offset;
}

// ---- the writer ----

struct GgufWriter::Plan {
  uint32_t alignment = kGgufDefaultAlignment;
  // The metadata to write, in order: the caller's entries with atq.layout.* values regenerated, then the
  // layout keys of atq-typed tensors with per-channel or per-group scales that had none.
  std::vector<std::pair<std::string_view, const GgufValue*>> entries;
  std::vector<std::pair<std::string, GgufValue>> generated;  // storage for regenerated layout entries
  std::vector<uint64_t> offsets;                             // per tensor, from the data section start
};

GgufWriter::GgufWriter(std::string path) : path_(std::move(path)), metadata_(path_) {}

void GgufWriter::AddTensor(const TensorInfo& tensor, const void* data) {
  CheckTensorName(path_, tensor.name);
  Require(by_name_.count(tensor.name) == 0, "{}: duplicate tensor name '{}'", path_, tensor.name);
  const std::string what = fmt::format("{}: tensor '{}'", path_, tensor.name);
  const auto type_id = static_cast<uint32_t>(tensor.type);
  PendingTensor pending;
  pending.info.name = tensor.name;
  pending.info.type = tensor.type;
  pending.info.shape = tensor.shape;
  if (IsAtqPackedType(type_id)) {
    pending.info.layout.granularity = tensor.layout.granularity;
    pending.info.layout.group_size = tensor.layout.granularity == Granularity::kGroup ? tensor.layout.group_size : 0;
  }
  const uint64_t expected = CheckTensor(what, type_id, pending.info.shape, pending.info.layout);
  Require(tensor.nbytes == expected, "{}: {} {} needs {} bytes, got {}", what, GgmlTypeName(type_id),
          ShapeString(tensor.shape), expected, tensor.nbytes);
  pending.info.nbytes = expected;
  pending.data = data;
  by_name_.emplace(tensor.name, tensors_.size());
  tensors_.push_back(std::move(pending));
}

void GgufWriter::AddTensor(std::string name, QuantType type, std::vector<int64_t> shape, const void* data,
                           uint64_t nbytes, Granularity granularity, int64_t group_size) {
  TensorInfo tensor;
  tensor.name = std::move(name);
  tensor.type = type;
  tensor.shape = std::move(shape);
  tensor.layout.granularity = granularity;
  tensor.layout.group_size = group_size;
  tensor.nbytes = nbytes;
  AddTensor(tensor, data);
}

GgufWriter::Plan GgufWriter::MakePlan() const {
  Plan plan;
  if (const GgufValue* alignment = metadata_.Find(kGgufAlignmentKey)) {
    const auto* value = alignment->get_if<uint32_t>();
    Require(value != nullptr, "{}: {} must be u32, got {}", path_, kGgufAlignmentKey,
            GgufTypeName(alignment->type()));
    Require(IsPowerOfTwo(*value), "{}: {} must be a power of two, got {}", path_, kGgufAlignmentKey, *value);
    plan.alignment = *value;
  }

  std::vector<size_t> atq_tensors;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (IsAtqPackedType(static_cast<uint32_t>(tensors_[i].info.type))) atq_tensors.push_back(i);
  }
  plan.generated.reserve(atq_tensors.size());  // entries point into it: no reallocation after this
  std::vector<bool> has_layout_key(tensors_.size(), false);
  for (const auto& [key, value] : metadata_) {
    if (!StartsWith(key, kGgufLayoutKeyPrefix)) {
      plan.entries.emplace_back(key, &value);
      continue;
    }
    const auto found = by_name_.find(key.substr(kGgufLayoutKeyPrefix.size()));
    if (found == by_name_.end() || !IsAtqPackedType(static_cast<uint32_t>(tensors_[found->second].info.type))) {
      continue;  // describes no atq-typed tensor of this file
    }
    has_layout_key[found->second] = true;
    plan.generated.emplace_back(key, GranularityString(tensors_[found->second].info.layout));
    plan.entries.emplace_back(plan.generated.back().first, &plan.generated.back().second);
  }
  for (size_t index : atq_tensors) {
    const TensorInfo& info = tensors_[index].info;
    // Absent means per tensor, so a file read without the key is written back without it.
    if (has_layout_key[index] || info.layout.granularity == Granularity::kTensor) continue;
    plan.generated.emplace_back(std::string(kGgufLayoutKeyPrefix) + info.name, GranularityString(info.layout));
    plan.entries.emplace_back(plan.generated.back().first, &plan.generated.back().second);
  }

  uint64_t offset = 0;
  for (const PendingTensor& tensor : tensors_) {
    plan.offsets.push_back(offset);
    const uint64_t padded = AlignUp(tensor.info.nbytes, plan.alignment);
    Require(padded >= tensor.info.nbytes && offset <= UINT64_MAX - padded, "{}: tensor data exceeds 2^64 bytes",
            path_);
    offset += padded;
  }
  return plan;
}

template <typename Sink>
void GgufWriter::WriteHeader(const Plan& plan, Sink& sink) const {
  sink.Write(kMagic, sizeof(kMagic));
  WriteNumber<Sink, uint32_t>(sink, kGgufVersion);
  WriteNumber<Sink, uint64_t>(sink, tensors_.size());
  WriteNumber<Sink, uint64_t>(sink, plan.entries.size());

  for (const auto& [key, value] : plan.entries) {
    Require(!key.empty(), "{}: a metadata key is empty", path_);
    Require(IsValidUtf8(key), "{}: metadata key '{}' is not valid UTF-8", path_, Printable(key));
    WriteString(sink, key);
    WriteValue(sink, *value, fmt::format("{}: metadata key '{}'", path_, Printable(key)));
  }

  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& info = tensors_[i].info;
    WriteString(sink, info.name);
    WriteNumber<Sink, uint32_t>(sink, static_cast<uint32_t>(info.shape.size()));
    for (auto dim = info.shape.rbegin(); dim != info.shape.rend(); ++dim) {  // ggml's ne[0] is innermost
      WriteNumber<Sink, uint64_t>(sink, static_cast<uint64_t>(*dim));
    }
    WriteNumber<Sink, uint32_t>(sink, static_cast<uint32_t>(info.type));
    WriteNumber<Sink, uint64_t>(sink, plan.offsets[i]);
  }
  sink.WriteZeros(static_cast<size_t>(AlignUp(sink.bytes_written(), plan.alignment) - sink.bytes_written()));
}

template <typename Sink>
void GgufWriter::WriteData(const Plan& plan, size_t index, const void* data, uint64_t nbytes, uint64_t data_start,
                           Sink& sink) const {
  const TensorInfo& info = tensors_[index].info;
  Require(nbytes == info.nbytes, "{}: tensor '{}' needs {} bytes, got {}", path_, info.name, info.nbytes, nbytes);
  Require(data != nullptr || nbytes == 0, "{}: tensor '{}' has no data", path_, info.name);
  Require(sink.bytes_written() - data_start == plan.offsets[index], "{}: internal error: tensor '{}' misplaced", path_,
          info.name);
  sink.Write(data, static_cast<size_t>(nbytes));
  sink.WriteZeros(static_cast<size_t>(AlignUp(nbytes, plan.alignment) - nbytes));
}

template <typename Sink>
void GgufWriter::WriteTo(const Plan& plan, Sink& sink) const {
  WriteHeader(plan, sink);
  const uint64_t data_start = sink.bytes_written();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    WriteData(plan, i, tensors_[i].data, tensors_[i].info.nbytes, data_start, sink);
  }
}

void GgufWriter::Write() const {
  const Plan plan = MakePlan();
  AtomicFile file(path_);
  WriteTo(plan, file);
  file.Commit();
}

struct GgufWriter::Stream {
  Plan plan;
  AtomicFile file;
  uint64_t data_start = 0;
  size_t next = 0;
  explicit Stream(const std::string& path) : file(path) {}
};

void GgufWriter::Begin() {
  Require(stream_ == nullptr, "{}: internal error: the header is written already", path_);
  Plan plan = MakePlan();
  stream_ = std::make_unique<Stream>(path_);
  stream_->plan = std::move(plan);
  WriteHeader(stream_->plan, stream_->file);
  stream_->data_start = stream_->file.bytes_written();
}

void GgufWriter::WriteNext(const void* data, uint64_t nbytes) {
  Require(stream_ != nullptr, "{}: internal error: tensor data before the header", path_);
  Require(stream_->next < tensors_.size(), "{}: more tensors than the header declares", path_);
  WriteData(stream_->plan, stream_->next, data, nbytes, stream_->data_start, stream_->file);
  ++stream_->next;
}

const std::string& GgufWriter::NextName() const {
  Require(stream_ != nullptr && stream_->next < tensors_.size(), "{}: no tensor is expected next", path_);
  return tensors_[stream_->next].info.name;
}

void GgufWriter::Commit() {
  Require(stream_ != nullptr, "{}: internal error: nothing to commit", path_);
  Require(stream_->next == tensors_.size(), "{}: {} of the {} tensors written", path_, stream_->next, tensors_.size());
  stream_->file.Commit();
  stream_.reset();
}

GgufWriter::~GgufWriter() = default;
GgufWriter::GgufWriter(GgufWriter&&) noexcept = default;

std::vector<uint8_t> GgufWriter::Serialize() const {
  const Plan plan = MakePlan();
  std::vector<uint8_t> out;
  VectorSink sink(out);
  WriteTo(plan, sink);
  return out;
}

}  // namespace atq
