// libFuzzer target for the IDX reader: the input becomes a file (the reader takes paths, plain or gzip), read
// as labels (rank 1) and as images (rank 3). Only atq::Error may come out; anything else is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "io/idx.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("atq_fuzz_idx_" + std::to_string(::getpid()) + ".bin")).string();
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return 0;
  const bool written = std::fwrite(data, 1, size, file) == size;
  std::fclose(file);
  if (!written) return 0;
  for (const int rank : {1, 3}) {
    try {
      const atq::IdxArray array = atq::ReadIdxFile(path, rank);
      uint64_t expected = 1;
      for (const int64_t dim : array.dims) expected *= static_cast<uint64_t>(dim);
      if (array.data.size() != expected) __builtin_trap();  // the reader promised dims * 1 byte
    } catch (const atq::Error&) {
    }
  }
  return 0;
}
