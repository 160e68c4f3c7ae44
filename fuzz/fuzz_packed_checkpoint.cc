// libFuzzer target for atq's packed checkpoints as a folder: the first byte picks the layout, the rest becomes the
// files (a single model.safetensors, or a model.safetensors.index.json and one shard split at the first 0xFF
// byte), opened as TensorFile does for every command. Packed tensors (atq.packed.* metadata) are then read as
// the kernels read them (CheckPackedMatrix, RowDecoder) and dequantized. Only atq::Error may come out; anything
// else (a crash, another exception, a sanitizer report, a code outside its format's range) is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "formats/quant_type.h"
#include "io/tensor_file.h"
#include "kernels/packed_matrix.h"
#include "util/error.h"
#include "fuzz_files.h"

namespace {

// Dequantizing is cheap for what fits a fuzz input, but an empty tensor can claim billions of rows.
constexpr int64_t kMaxDequantizedElements = int64_t{1} << 16;

[[noreturn]] void Die(const char* what) { atq::fuzz::Die("fuzz_packed_checkpoint", what); }
using atq::fuzz::WriteFile;

void ReadEveryTensor(const atq::TensorFile& file) {
  for (const atq::TensorEntry& entry : file.tensors()) {
    const atq::TensorInfo& info = *entry.info;
    const atq::Layout& layout = info.layout;
    if (layout.rows * layout.cols > kMaxDequantizedElements) continue;
    try {
      const std::vector<float> values = atq::ReadAsFloat(entry);
      if (static_cast<int64_t>(values.size()) != layout.rows * layout.cols) Die("dequantized size is not rows*cols");
      const atq::TypeTraits& traits = atq::Traits(info.type);
      if (!traits.is_quantized || layout.rows == 0) continue;
      const atq::PackedMatrix matrix{layout, entry.data};
      atq::CheckPackedMatrix(matrix, static_cast<int64_t>(info.nbytes), entry.file + " " + info.name);
      const atq::RowDecoder decoder(matrix);
      const int64_t segments = atq::SegmentsPerRow(layout), segment = atq::KernelSegment(layout);
      std::vector<uint8_t> codes(static_cast<size_t>(segments * segment));
      std::vector<float> scales(static_cast<size_t>(segments));
      std::vector<int32_t> offsets(static_cast<size_t>(segments));
      for (int64_t row = 0; row < layout.rows; ++row) decoder.Decode(row, codes.data(), scales.data(), offsets.data());
    } catch (const atq::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  namespace fs = std::filesystem;
  static const fs::path dir = fs::temp_directory_path() / ("atq_fuzz_packed_" + std::to_string(::getpid()));
  std::error_code error;
  fs::remove_all(dir, error);
  fs::create_directories(dir, error);
  if (error) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) {
    const size_t split = bytes.find('\xFF');
    if (split == std::string_view::npos) return 0;
    if (!WriteFile(dir / "model.safetensors.index.json", bytes.substr(0, split)) ||
        !WriteFile(dir / "model-00001-of-00001.safetensors", bytes.substr(split + 1))) {
      return 0;
    }
  } else if (!WriteFile(dir / "model.safetensors", bytes)) {
    return 0;
  }
  try {
    ReadEveryTensor(atq::TensorFile::Open(dir.string()));
  } catch (const atq::Error&) {
  }
  return 0;
}
