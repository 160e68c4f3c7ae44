// Reads and writes GGUF v3, llama.cpp's model file: typed metadata (key order kept), tensor infos, then the
// tensor data, each tensor aligned to general.alignment (default 32). Spec: ggml's docs/gguf.md.
//
// What atq decides where the spec and llama.cpp leave room (every rejection is an atq::Error "FILE: ..."):
// - Versions 2 and 3 are read (they differ only in that v3 may be big-endian, which atq does not read:
//   a byte-swapped version is reported as such); version 1 (32-bit counts) and 0 or > 3 are rejected.
//   The writer always writes version 3.
// - Keys are non-empty valid UTF-8 and unique. String values may hold any bytes (llama.cpp checks nothing
//   there, and token strings in the wild carry lone bytes), so they round-trip unchanged.
// - Arrays may nest, as the spec allows (llama.cpp itself does not read them), at most kMaxArrayDepth deep.
// - A bool is the byte 0 or 1; anything else is rejected (the spec calls it invalid; llama.cpp reads != 0).
// - general.alignment, when present, is a u32 power of two (1 included, as llama.cpp accepts).
// - Tensor names are non-empty valid UTF-8 of at most kMaxTensorNameBytes bytes (llama.cpp's GGML_MAX_NAME
//   less its terminator) and unique. At most 4 dims (0 dims is a scalar), each 0 .. INT64_MAX; zero-sized
//   tensors are allowed. The row length ne[0] of a block type is a multiple of its block size.
// - Tensor types: every id ggml defines (atq copies q5_0, q4_K, iq* ... tensors byte for byte even where it
//   cannot convert them: TensorInfo::type then holds the ggml id, which FindTraits() does not know; name it
//   with GgmlTypeName()) and atq's own packed types (ids >= 128). Removed ggml ids (4, 5, 31-33, 36-38),
//   atq's safetensors-only u8/bool (64, 65) and unknown ids are rejected.
// - An atq type's scale layout is the string metadata `atq.layout.<tensor name>`: "tensor", "channel" or
//   "group:<N>" (N > 0, no leading zeros); absent means per tensor. Such a key naming no atq-typed tensor
//   is rejected.
// - Tensor offsets are multiples of the alignment; tensors lie inside the file and do not overlap; they may
//   come in any order with gaps (llama.cpp additionally insists on back-to-back order; atq's writer
//   produces exactly that layout, including the padding after the last tensor).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "formats/quant_type.h"
#include "io/mapped_file.h"
#include "io/tensor_info.h"

namespace atq {

// GGUF's metadata value types, with the spec's ids.
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
constexpr uint32_t kGgufTypeCount = 13;
std::string_view GgufTypeName(GgufType type);  // "u8" .. "f64", "string", "array"

// One GGUF array: a single element type and the elements as one typed vector (a tokenizer array holds
// 32k-150k strings, so elements are not boxed one by one). The variant's alternative index is the GGUF type
// id of the elements; nested arrays are std::vector<GgufArray>.
class GgufArray {
 public:
  using Elements =
      std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>, std::vector<int16_t>,
                   std::vector<uint32_t>, std::vector<int32_t>, std::vector<float>, std::vector<bool>,
                   std::vector<std::string>, std::vector<GgufArray>, std::vector<uint64_t>, std::vector<int64_t>,
                   std::vector<double>>;

  GgufArray() = default;  // an empty array of u8
  template <typename T>
  explicit GgufArray(std::vector<T> elements) : elements_(std::in_place_type<std::vector<T>>, std::move(elements)) {}

  GgufType element_type() const { return static_cast<GgufType>(elements_.index()); }
  size_t size() const;
  bool empty() const { return size() == 0; }
  const Elements& elements() const { return elements_; }
  Elements& elements() { return elements_; }
  // nullptr unless the elements are of type T.
  template <typename T>
  const std::vector<T>* get_if() const {
    return std::get_if<std::vector<T>>(&elements_);
  }

  // Same element type and elements; floats compare by bits (NaN equals itself, -0.0 differs from 0.0), so
  // equal arrays are written to identical bytes.
  friend bool operator==(const GgufArray& a, const GgufArray& b);
  friend bool operator!=(const GgufArray& a, const GgufArray& b) { return !(a == b); }

 private:
  Elements elements_;
};

// One metadata value. The variant's alternative index is the value's GGUF type id.
class GgufValue {
 public:
  using Variant = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
                               GgufArray, uint64_t, int64_t, double>;

  GgufValue() = default;  // u8 0
  // One constructor per GGUF type, so the stored type is exactly the argument's type (GgufValue(uint32_t{5})).
  // A plain int literal is ambiguous on purpose: say which width the file should hold.
  GgufValue(uint8_t value) : value_(std::in_place_type<uint8_t>, value) {}
  GgufValue(int8_t value) : value_(std::in_place_type<int8_t>, value) {}
  GgufValue(uint16_t value) : value_(std::in_place_type<uint16_t>, value) {}
  GgufValue(int16_t value) : value_(std::in_place_type<int16_t>, value) {}
  GgufValue(uint32_t value) : value_(std::in_place_type<uint32_t>, value) {}
  GgufValue(int32_t value) : value_(std::in_place_type<int32_t>, value) {}
  GgufValue(float value) : value_(std::in_place_type<float>, value) {}
  GgufValue(bool value) : value_(std::in_place_type<bool>, value) {}
  GgufValue(std::string value) : value_(std::in_place_type<std::string>, std::move(value)) {}
  GgufValue(const char* value) : value_(std::in_place_type<std::string>, value) {}  // not bool
  GgufValue(GgufArray value) : value_(std::in_place_type<GgufArray>, std::move(value)) {}
  GgufValue(uint64_t value) : value_(std::in_place_type<uint64_t>, value) {}
  GgufValue(int64_t value) : value_(std::in_place_type<int64_t>, value) {}
  GgufValue(double value) : value_(std::in_place_type<double>, value) {}

  GgufType type() const { return static_cast<GgufType>(value_.index()); }
  const Variant& variant() const { return value_; }
  template <typename T>
  const T* get_if() const {
    return std::get_if<T>(&value_);
  }

  // Typed reads. On a type mismatch they throw atq::Error "WHAT is TYPE, expected ..." where `what` says
  // which value it is (GgufMetadata passes "FILE: metadata key 'KEY'").
  uint64_t AsUint(std::string_view what) const;  // any integer type holding a value >= 0
  int64_t AsInt(std::string_view what) const;    // any integer type holding a value that fits int64
  double AsFloat(std::string_view what) const;   // f32 or f64
  bool AsBool(std::string_view what) const;
  const std::string& AsString(std::string_view what) const;
  const GgufArray& AsArray(std::string_view what) const;

  friend bool operator==(const GgufValue& a, const GgufValue& b);  // same type and value; floats by bits
  friend bool operator!=(const GgufValue& a, const GgufValue& b) { return !(a == b); }

 private:
  Variant value_;
};

// Metadata in file order, with lookup by key. `source` (the file's path) starts every error message.
class GgufMetadata {
 public:
  using Entry = std::pair<std::string, GgufValue>;

  explicit GgufMetadata(std::string source = "GGUF metadata") : source_(std::move(source)) {}

  const std::string& source() const { return source_; }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }
  const std::vector<Entry>& entries() const { return entries_; }

  // Replaces the value in place when the key exists (its position is kept), else appends.
  void Set(std::string key, GgufValue value);
  // Removes the key if present; returns whether it was.
  bool Erase(std::string_view key);
  // nullptr when absent.
  const GgufValue* Find(std::string_view key) const;
  bool Contains(std::string_view key) const { return Find(key) != nullptr; }

  // Typed reads; throw atq::Error "SOURCE: metadata key 'KEY' is missing" or "... is TYPE, expected ...".
  const GgufValue& Get(std::string_view key) const;
  const std::string& GetString(std::string_view key) const;
  uint64_t GetUint(std::string_view key) const;  // any integer type, value >= 0
  int64_t GetInt(std::string_view key) const;    // any integer type, value fits int64
  double GetFloat(std::string_view key) const;   // f32 or f64
  bool GetBool(std::string_view key) const;
  const GgufArray& GetArray(std::string_view key) const;
  const std::vector<std::string>& GetStringArray(std::string_view key) const;
  std::vector<float> GetFloatArray(std::string_view key) const;   // f32 or f64 elements
  std::vector<int64_t> GetIntArray(std::string_view key) const;   // any integer elements that fit int64

  // Same keys in the same order with equal values (the source name is not compared).
  friend bool operator==(const GgufMetadata& a, const GgufMetadata& b) { return a.entries_ == b.entries_; }
  friend bool operator!=(const GgufMetadata& a, const GgufMetadata& b) { return !(a == b); }

 private:
  std::string Describe(std::string_view key) const;

  std::string source_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;  // key -> position in entries_
};

// The GGUF constants atq relies on.
constexpr uint32_t kGgufVersion = 3;
constexpr uint32_t kGgufDefaultAlignment = 32;
constexpr std::string_view kGgufAlignmentKey = "general.alignment";
constexpr std::string_view kGgufLayoutKeyPrefix = "atq.layout.";  // + tensor name
constexpr int kGgufMaxDims = 4;                                   // GGML_MAX_DIMS
constexpr size_t kMaxTensorNameBytes = 63;                        // GGML_MAX_NAME - 1
constexpr int kMaxArrayDepth = 8;  // an array of arrays of strings is depth 2

// The name of any tensor type id a GGUF file may hold: atq's name for types in the format table ("q8_0",
// "t2"), ggml's for the others ("q5_0", "iq2_xs"), "type<ID>" for ids neither knows.
std::string GgmlTypeName(uint32_t id);

// A parsed, validated GGUF file. Every check a hostile file could fail happens in Open/FromBytes, so Data()
// of any listed tensor is in bounds and every tensor's nbytes matches its type and shape.
class GgufFile {
 public:
  // Maps the file read-only; throws atq::Error "PATH: what is wrong".
  static GgufFile Open(const std::string& path);
  // Parses bytes held in memory (fuzzer, tests); `name` stands for the path in error messages.
  static GgufFile FromBytes(std::string name, std::vector<uint8_t> bytes);

  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const GgufMetadata& metadata() const { return metadata_; }
  // In file order. shape is outermost-first (ggml's ne reversed); layout.granularity/group_size come from
  // atq.layout.<name>; offset counts from data_offset(); nbytes from the format table.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when there is no tensor of that name.
  const TensorInfo* Find(std::string_view name) const;
  // The tensor's first byte, aligned to alignment() relative to the file start. Throws atq::Error when
  // `tensor` does not lie inside this file's data section.
  const uint8_t* Data(const TensorInfo& tensor) const;
  // Where the data section starts: the end of the tensor infos rounded up to alignment().
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

 private:
  GgufFile() = default;
  static GgufFile Load(MappedFile source);
  void Parse();

  std::string path_;
  MappedFile mapped_;  // the file's mapping, or the bytes given to FromBytes
  const uint8_t* bytes_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  GgufMetadata metadata_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
};

// Builds a GGUF v3 file: metadata in insertion order, tensor infos and data in AddTensor order, each tensor
// at the next multiple of the alignment (general.alignment in the metadata, a u32 power of two, else 32)
// and padded after, as llama.cpp writes them. Errors start with the output path.
class GgufWriter {
 public:
  explicit GgufWriter(std::string path);
  ~GgufWriter();
  GgufWriter(GgufWriter&&) noexcept;

  // The metadata to write. general.alignment here sets the alignment. atq.layout.* keys are managed by the
  // writer: the tensor's own layout replaces the value in place when the key is present; the key is
  // appended for per-channel and per-group tensors that lack it (absent means per tensor, so a file read
  // without one is written back without one); keys naming no atq-typed tensor are dropped.
  GgufMetadata& metadata() { return metadata_; }
  const GgufMetadata& metadata() const { return metadata_; }

  // Adds a tensor: name, type, shape (outermost first), nbytes and, for atq types, layout.granularity and
  // layout.group_size are used (offset and layout rows/cols are recomputed). Checks the name (unique,
  // non-empty, UTF-8, <= kMaxTensorNameBytes), the shape (<= 4 dims, block-size rows), that the type can be
  // stored in GGUF, and that nbytes is what the format table says. The bytes are not copied: `data` must
  // stay valid until Write/Serialize; null
  // when the bytes come later through WriteNext.
  void AddTensor(const TensorInfo& tensor, const void* data);
  void AddTensor(std::string name, QuantType type, std::vector<int64_t> shape, const void* data, uint64_t nbytes,
                 Granularity granularity = Granularity::kTensor, int64_t group_size = 0);

  // Writes path() under a temporary name and renames it into place; on any error nothing is left behind.
  void Write() const;
  // The same, tensor by tensor (tensors added with null data): Begin() writes the header, WriteNext() each
  // tensor's bytes in AddTensor order, Commit() renames the file into place once all have arrived. Destroyed
  // before Commit (an error, a full disk), the writer leaves no file.
  void Begin();
  void WriteNext(const void* data, uint64_t nbytes);
  const std::string& NextName() const;  // the tensor WriteNext expects
  void Commit();
  // The same bytes, in memory.
  std::vector<uint8_t> Serialize() const;

  const std::string& path() const { return path_; }

 private:
  struct PendingTensor {
    TensorInfo info;  // offset is assigned when writing, once the alignment is known
    const void* data = nullptr;
  };
  struct Plan;
  Plan MakePlan() const;  // checks everything that needs no output, before a file is created
  template <typename Sink>
  void WriteTo(const Plan& plan, Sink& sink) const;
  template <typename Sink>
  void WriteHeader(const Plan& plan, Sink& sink) const;
  template <typename Sink>
  void WriteData(const Plan& plan, size_t index, const void* data, uint64_t nbytes, uint64_t data_start,
                 Sink& sink) const;
  struct Stream;
  std::unique_ptr<Stream> stream_;

  std::string path_;
  GgufMetadata metadata_;
  std::vector<PendingTensor> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
};

}  // namespace atq
