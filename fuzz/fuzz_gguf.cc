// libFuzzer target for the GGUF reader and writer: any input must parse or fail with atq::Error, nothing
// else; whatever parses is read in full, and writing it back and reading that gives the same file.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <type_traits>
#include <variant>
#include <vector>

#include "formats/quant_type.h"
#include "io/gguf.h"
#include "util/error.h"

namespace {

// Dequantizing is cheap for what fits a fuzz input, but a zero-byte tensor can claim billions of rows.
constexpr int64_t kMaxDequantizedElements = int64_t{1} << 16;

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "fuzz_gguf: %s\n", what);
  std::abort();
}

uint64_t Touch(const atq::GgufArray& array);

template <typename T>
uint64_t TouchOne(const T& value) {
  if constexpr (std::is_same_v<T, std::string>) {
    uint64_t sum = value.size();
    for (char c : value) sum += static_cast<unsigned char>(c);
    return sum;
  } else if constexpr (std::is_same_v<T, atq::GgufArray>) {
    return Touch(value);
  } else {
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    return bits;
  }
}

uint64_t Touch(const atq::GgufArray& array) {
  return std::visit(
      [](const auto& elements) -> uint64_t {
        uint64_t sum = elements.size();
        for (size_t i = 0; i < elements.size(); ++i) {
          using Element = typename std::decay_t<decltype(elements)>::value_type;
          sum += TouchOne<Element>(elements[i]);  // std::vector<bool> yields a bool by value
        }
        return sum;
      },
      array.elements());
}

uint64_t Touch(const atq::GgufValue& value) {
  return std::visit([](const auto& payload) { return TouchOne(payload); }, value.variant());
}

bool SameTensor(const atq::GgufFile& a_file, const atq::TensorInfo& a, const atq::GgufFile& b_file,
                const atq::TensorInfo& b) {
  return a.name == b.name && a.type == b.type && a.shape == b.shape && a.nbytes == b.nbytes &&
         a.layout.rows == b.layout.rows && a.layout.cols == b.layout.cols &&
         a.layout.granularity == b.layout.granularity && a.layout.group_size == b.layout.group_size &&
         (a.nbytes == 0 || std::memcmp(a_file.Data(a), b_file.Data(b), a.nbytes) == 0);
}

void Fuzz(const uint8_t* data, size_t size) {
  std::optional<atq::GgufFile> file;
  try {
    file.emplace(atq::GgufFile::FromBytes("fuzz.gguf", std::vector<uint8_t>(data, data + size)));
  } catch (const atq::Error&) {
    return;  // a clean rejection
  }

  // Read every value and every byte the parser vouched for, so the sanitizers see any range it got wrong.
  uint64_t checksum = file->version() + file->alignment() + file->data_offset();
  for (const auto& [key, value] : file->metadata()) checksum += key.size() + Touch(value);
  for (const atq::TensorInfo& tensor : file->tensors()) {
    if (file->Find(tensor.name) != &tensor) Die("a listed tensor is not found under its name");
    if ((file->data_offset() + tensor.offset) % file->alignment() != 0) Die("a tensor is not aligned");
    const uint8_t* bytes = file->Data(tensor);
    for (uint64_t i = 0; i < tensor.nbytes; ++i) checksum += bytes[i];
    const atq::TypeTraits* traits = atq::FindTraits(static_cast<uint32_t>(tensor.type));
    if (traits != nullptr && tensor.layout.rows * tensor.layout.cols <= kMaxDequantizedElements &&
        tensor.layout.rows <= kMaxDequantizedElements) {
      try {
        const std::vector<float> values =
            atq::Dequantize(tensor.layout, bytes, static_cast<int64_t>(tensor.nbytes));
        for (float v : values) checksum += static_cast<uint64_t>(v == v);
      } catch (const atq::Error&) {
        // Packed bytes from a hostile file may hold codes the format forbids; a clean rejection is fine.
      }
    }
  }
  volatile uint64_t sink = checksum;
  (void)sink;

  // Whatever the reader accepts the writer writes, and reading that gives the same metadata and tensors.
  std::vector<uint8_t> written;
  try {
    atq::GgufWriter writer("fuzz-copy.gguf");
    writer.metadata() = file->metadata();
    for (const atq::TensorInfo& tensor : file->tensors()) writer.AddTensor(tensor, file->Data(tensor));
    written = writer.Serialize();
  } catch (const atq::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    Die("the writer rejects a file the reader accepted");
  }
  std::optional<atq::GgufFile> copy;
  try {
    copy.emplace(atq::GgufFile::FromBytes("fuzz-copy.gguf", std::move(written)));
  } catch (const atq::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    Die("the reader rejects what the writer wrote");
  }
  if (copy->metadata() != file->metadata()) Die("metadata changed in a write and read");
  if (copy->alignment() != file->alignment()) Die("alignment changed in a write and read");
  if (copy->tensors().size() != file->tensors().size()) Die("tensor count changed in a write and read");
  for (size_t i = 0; i < file->tensors().size(); ++i) {
    if (!SameTensor(*file, file->tensors()[i], *copy, copy->tensors()[i])) {
      Die("a tensor changed in a write and read");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    Fuzz(data, size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_gguf: exception other than a parse error: %s\n", e.what());
    std::abort();
  }
  return 0;
}
