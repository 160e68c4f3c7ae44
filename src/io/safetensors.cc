// safetensors parsing with every size checked against the file before use, and the matching writer.
#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/strict_json.h"
#include "util/error.h"
#include "util/utf8.h"
#include "util/log.h"

namespace atq {
namespace {

using nlohmann::json;

struct DtypeRow {
  std::string_view name;
  QuantType type;
};
constexpr DtypeRow kDtypes[] = {
    {"F32", QuantType::kF32}, {"F16", QuantType::kF16}, {"BF16", QuantType::kBF16}, {"F64", QuantType::kF64},
    {"I8", QuantType::kI8},   {"U8", QuantType::kU8},   {"I16", QuantType::kI16},   {"I32", QuantType::kI32},
    {"I64", QuantType::kI64}, {"BOOL", QuantType::kBool},
};
constexpr std::string_view kKnownDtypes = "F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL";
constexpr std::string_view kMetadataKey = "__metadata__";
// Printable form of a name from a file, for error messages: bounded length, JSON escapes.
std::string Quote(std::string_view text) {
  constexpr size_t kMaxShown = 200;
  std::string shown(text.substr(0, kMaxShown));
  // The header was checked to be UTF-8, but cutting may split a character; drop the broken tail.
  while (FindInvalidUtf8(shown) != std::string_view::npos) shown.pop_back();
  std::string quoted = json(shown).dump();
  quoted = "'" + quoted.substr(1, quoted.size() - 2) + "'";
  if (text.size() > kMaxShown) quoted += fmt::format(" (truncated, {} bytes)", text.size());
  return quoted;
}

std::string_view JsonTypeName(const json& value) {
  if (value.is_number_integer()) return "integer";
  return value.type_name();
}

uint64_t ReadLittleEndian64(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

void AppendLittleEndian64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

// A non-negative JSON integer that fits in `max`; std::nullopt otherwise (negative, float, too big, not a number).
std::optional<uint64_t> AsUnsigned(const json& value, uint64_t max) {
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (v <= max) return v;
  } else if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v >= 0 && static_cast<uint64_t>(v) <= max) return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

std::vector<int64_t> ParseShape(const json& entry, const std::string& what) {
  const auto found = entry.find("shape");
  Require(found != entry.end(), "{}: missing \"shape\"", what);
  Require(found->is_array(), "{}: \"shape\" must be a list of integers, got {}", what, JsonTypeName(*found));
  std::vector<int64_t> shape;
  shape.reserve(found->size());
  for (const json& dim : *found) {
    if (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() < 0) {
      Fail("{}: negative dimension {} in \"shape\" {}", what, dim.get<int64_t>(), found->dump());
    }
    const std::optional<uint64_t> value = AsUnsigned(dim, INT64_MAX);
    if (!value) {
      if (dim.is_number()) Fail("{}: dimension {} in \"shape\" is not an integer below 2^63", what, dim.dump());
      Fail("{}: \"shape\" must be a list of integers, found {}", what, JsonTypeName(dim));
    }
    shape.push_back(static_cast<int64_t>(*value));
  }
  return shape;
}

std::pair<uint64_t, uint64_t> ParseOffsets(const json& entry, const std::string& what) {
  const auto found = entry.find("data_offsets");
  Require(found != entry.end(), "{}: missing \"data_offsets\"", what);
  if (!found->is_array() || found->size() != 2) {
    Fail("{}: \"data_offsets\" must be [begin, end], got {}", what,
         found->is_array() ? fmt::format("a list of {}", found->size()) : std::string(JsonTypeName(*found)));
  }
  const std::optional<uint64_t> begin = AsUnsigned((*found)[0], UINT64_MAX);
  const std::optional<uint64_t> end = AsUnsigned((*found)[1], UINT64_MAX);
  if (!begin || !end) {
    Fail("{}: \"data_offsets\" {} must be two non-negative integers", what, found->dump().substr(0, 200));
  }
  return {*begin, *end};
}

// CheckedElementCount accepts [0, 2^40, 2^40] (the product is 0), but LayoutForShape multiplies some dims
// without the zero; refusing shapes whose nonzero dims overflow keeps every partial product in range.
void CheckNonzeroDims(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t product = 1;
  for (int64_t dim : shape) {
    if (dim == 0) continue;
    if (product > INT64_MAX / dim) {
      Fail("{}: shape {} has dims whose product overflows 64 bits", what, ShapeString(shape));
    }
    product *= dim;
  }
}

// Bytes of `count` elements of a plain type; throws (naming `what`) past 2^64.
uint64_t PlainBytes(QuantType type, int64_t count, const std::string& what) {
  const TypeTraits& traits = Traits(type);
  const auto element = static_cast<uint64_t>(traits.bytes_per_block);
  const auto elements = static_cast<uint64_t>(count);
  Require(traits.block_size == 1 && element > 0, "{}: {} is not a plain element type", what, traits.name);
  Require(elements <= UINT64_MAX / element, "{}: {} elements of {} bytes overflow 64 bits", what, count, element);
  return elements * element;
}

}  // namespace

std::optional<std::string_view> SafetensorsDtypeName(QuantType type) {
  for (const DtypeRow& row : kDtypes) {
    if (row.type == type) return row.name;
  }
  return std::nullopt;
}

std::optional<QuantType> ParseSafetensorsDtype(std::string_view dtype) {
  for (const DtypeRow& row : kDtypes) {
    if (row.name == dtype) return row.type;
  }
  return std::nullopt;
}

SafetensorsFile SafetensorsFile::Open(const std::string& path) { return Load(MappedFile::Open(path)); }

SafetensorsFile SafetensorsFile::FromBytes(std::string name, std::vector<uint8_t> bytes) {
  return Load(MappedFile::FromBytes(std::move(name), std::move(bytes)));
}

SafetensorsFile SafetensorsFile::Load(MappedFile source) {
  SafetensorsFile file;
  file.path_ = source.path();
  file.mapped_ = std::move(source);
  file.bytes_ = file.mapped_.data();
  file.size_ = file.mapped_.size();
  file.Parse();
  return file;
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  const auto found = by_name_.find(std::string(name));
  return found == by_name_.end() ? nullptr : &tensors_[found->second];
}

const uint8_t* SafetensorsFile::Data(const TensorInfo& tensor) const {
  const uint64_t data_size = size_ - data_offset_;
  if (tensor.offset > data_size || tensor.nbytes > data_size - tensor.offset) {
    Fail("{}: tensor {} (bytes {}..{}) is not inside this file's {}-byte data section", path_, Quote(tensor.name),
         tensor.offset, tensor.offset + tensor.nbytes, data_size);
  }
  return bytes_ + data_offset_ + tensor.offset;
}

void SafetensorsFile::Parse() {
  Require(size_ >= 8, "{}: file is {} bytes, too short for the 8-byte header length of a safetensors file", path_,
          size_);
  const uint64_t header_size = ReadLittleEndian64(bytes_);
  // Both checks come before anything sized by the header is allocated.
  Require(header_size <= kMaxHeaderBytes,
          "{}: header length {} is larger than the {}-byte limit (not a safetensors file?)", path_, header_size,
          kMaxHeaderBytes);
  Require(header_size <= size_ - 8, "{}: header length {} runs past the end of the file ({} bytes after the length)",
          path_, header_size, size_ - 8);
  data_offset_ = 8 + header_size;
  const uint64_t data_size = size_ - data_offset_;

  const std::string_view text(reinterpret_cast<const char*>(bytes_ + 8), header_size);

  // Offsets from the file, kept apart from TensorInfo so the overlap check can report both ranges.
  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  std::vector<TensorInfo> parsed;
  // Member by member: a header of many tensors never exists as one JSON document in memory.
  StreamStrictJsonObject(text, fmt::format("{}: header", path_), [&](std::string key, json entry) {
    if (key == kMetadataKey) {
      Require(entry.is_object(), "{}: \"__metadata__\" must be an object of strings, got {}", path_,
              JsonTypeName(entry));
      for (const auto& [meta_key, meta_value] : entry.items()) {
        if (!meta_value.is_string()) {
          Fail("{}: \"__metadata__\" value for {} must be a string, got {}", path_, Quote(meta_key),
               JsonTypeName(meta_value));
        }
        metadata_.emplace(meta_key, meta_value.get<std::string>());
      }
      return;
    }
    const std::string what = fmt::format("{}: tensor {}", path_, Quote(key));
    Require(entry.is_object(), "{}: entry must be an object with dtype, shape and data_offsets, got {}", what,
            JsonTypeName(entry));
    const auto dtype = entry.find("dtype");
    Require(dtype != entry.end(), "{}: missing \"dtype\"", what);
    Require(dtype->is_string(), "{}: \"dtype\" must be a string, got {}", what, JsonTypeName(*dtype));
    const std::optional<QuantType> type = ParseSafetensorsDtype(dtype->get<std::string>());
    if (!type) Fail("{}: unsupported dtype {} (atq reads {})", what, Quote(dtype->get<std::string>()), kKnownDtypes);

    TensorInfo info;
    info.name = std::move(key);
    info.type = *type;
    info.shape = ParseShape(entry, what);
    const int64_t count = CheckedElementCount(info.shape, what);
    CheckNonzeroDims(info.shape, what);
    const uint64_t needed = PlainBytes(info.type, count, what);
    const auto [begin, end] = ParseOffsets(entry, what);
    Require(begin <= end, "{}: data_offsets [{}, {}] begin after end", what, begin, end);
    Require(end <= data_size, "{}: data_offsets [{}, {}] end past the data section ({} bytes)", what, begin, end,
            data_size);
    if (end - begin != needed) {
      Fail("{}: data_offsets [{}, {}] but dtype {} shape {} needs {} bytes", what, begin, end,
           dtype->get<std::string>(), ShapeString(info.shape), needed);
    }
    info.layout = LayoutForShape(info.type, info.shape);
    info.offset = begin;
    info.nbytes = needed;
    ranges.push_back({begin, end, parsed.size()});
    parsed.push_back(std::move(info));
  });

  // File order; the overlap check walks it keeping the furthest end seen so far.
  std::sort(ranges.begin(), ranges.end(), [&](const Range& a, const Range& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return parsed[a.index].name < parsed[b.index].name;
  });
  uint64_t covered = 0;
  const Range* furthest = nullptr;
  for (const Range& range : ranges) {
    if (range.begin == range.end) continue;  // an empty tensor occupies no bytes
    if (furthest != nullptr && range.begin < covered) {
      Fail("{}: tensors {} (data_offsets [{}, {}]) and {} (data_offsets [{}, {}]) overlap", path_,
           Quote(parsed[furthest->index].name), furthest->begin, furthest->end, Quote(parsed[range.index].name),
           range.begin, range.end);
    }
    if (range.begin > covered) {
      LogDebug("{}: {} unused bytes before tensor {} (allowed, but not what the usual writers produce)", path_,
               range.begin - covered, Quote(parsed[range.index].name));
    }
    covered = range.end;
    furthest = &range;
  }
  if (covered < data_size) LogDebug("{}: {} unused bytes after the last tensor", path_, data_size - covered);

  tensors_.reserve(parsed.size());
  for (const Range& range : ranges) {
    by_name_.emplace(parsed[range.index].name, tensors_.size());
    tensors_.push_back(std::move(parsed[range.index]));
  }
}

void ValidateTensorsToWrite(const std::string& path, const std::vector<TensorToWrite>& tensors,
                            const std::map<std::string, std::string>& metadata, bool need_data) {
  for (const auto& [key, value] : metadata) {
    if (FindInvalidUtf8(key) != std::string_view::npos || FindInvalidUtf8(value) != std::string_view::npos) {
      Fail("{}: metadata key or value is not valid UTF-8 (key {})", path, Quote(key));
    }
  }
  std::set<std::string_view> names;
  for (const TensorToWrite& tensor : tensors) {
    Require(FindInvalidUtf8(tensor.name) == std::string_view::npos, "{}: tensor name is not valid UTF-8", path);
    const std::string what = fmt::format("{}: tensor {}", path, Quote(tensor.name));
    Require(tensor.name != kMetadataKey, "{}: \"__metadata__\" is reserved for the metadata map", what);
    Require(names.insert(tensor.name).second, "{}: written twice (tensor names must be unique)", what);
    const TypeTraits* traits = FindTraits(static_cast<uint32_t>(tensor.type));
    Require(traits != nullptr, "{}: unknown type id {}", what, static_cast<uint32_t>(tensor.type));
    if (!SafetensorsDtypeName(tensor.type)) {
      if (static_cast<uint32_t>(tensor.type) >= 128) {
        Fail("{}: {} is an atq packed format, not a safetensors dtype; store its packed bytes as U8 and describe "
             "the layout in metadata",
             what, traits->name);
      }
      Fail("{}: {} has no safetensors dtype (safetensors holds {})", what, traits->name, kKnownDtypes);
    }
    const int64_t count = CheckedElementCount(tensor.shape, what);
    CheckNonzeroDims(tensor.shape, what);
    const uint64_t needed = PlainBytes(tensor.type, count, what);
    if (tensor.nbytes != needed) {
      Fail("{}: {} bytes given but dtype {} shape {} needs {}", what, tensor.nbytes,
           *SafetensorsDtypeName(tensor.type), ShapeString(tensor.shape), needed);
    }
    Require(!need_data || tensor.data != nullptr || tensor.nbytes == 0, "{}: no data", what);
  }
}

SafetensorsStreamWriter::SafetensorsStreamWriter(std::string path, const std::vector<TensorToWrite>& tensors,
                                                 const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)) {
  ValidateTensorsToWrite(path_, tensors, metadata, /*need_data=*/false);
  // The Rust library's layout: "__metadata__" first (only when there is some), compact JSON, spaces to a
  // multiple of 8 so the data section starts aligned.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  for (const TensorToWrite& tensor : tensors) {
    Require(tensor.nbytes <= UINT64_MAX - data_bytes_, "{}: total tensor size overflows 64 bits", path_);
    header[tensor.name] = {{"dtype", *SafetensorsDtypeName(tensor.type)},
                           {"shape", tensor.shape},
                           {"data_offsets", {data_bytes_, data_bytes_ + tensor.nbytes}}};
    data_bytes_ += tensor.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string prefix;
  AppendLittleEndian64(prefix, text.size());
  file_ = std::make_unique<AtomicFile>(path_);
  file_->Write(prefix);
  file_->Write(text);
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;

void SafetensorsStreamWriter::Write(const void* data, size_t size) {
  Require(size <= data_bytes_ - written_, "{}: {} more bytes than the header declares", path_,
          size - (data_bytes_ - written_));
  file_->Write(data, size);
  written_ += size;
}

void SafetensorsStreamWriter::Commit() {
  Require(written_ == data_bytes_, "{}: {} of the {} declared data bytes written", path_, written_, data_bytes_);
  file_->Commit();
}

void WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  SafetensorsStreamWriter writer(path, tensors, metadata);
  for (const TensorToWrite& tensor : tensors) writer.Write(tensor.data, tensor.nbytes);
  writer.Commit();
}

}  // namespace atq
