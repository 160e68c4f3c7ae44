// libFuzzer target for the safetensors parser: any input must parse or fail with atq::Error, nothing else.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const atq::SafetensorsFile file =
        atq::SafetensorsFile::FromBytes("fuzz.safetensors", std::vector<uint8_t>(data, data + size));
    // Read every byte the parser vouched for, so ASan sees any range it got wrong.
    uint64_t checksum = 0;
    for (const atq::TensorInfo& info : file.tensors()) {
      const uint8_t* bytes = file.Data(info);
      for (uint64_t i = 0; i < info.nbytes; ++i) checksum += bytes[i];
      if (file.Find(info.name) != &info) std::abort();  // every listed tensor is found under its name
    }
    for (const auto& entry : file.metadata()) checksum += entry.first.size() + entry.second.size();
    volatile uint64_t sink = checksum;
    (void)sink;
  } catch (const atq::Error&) {
    // A clean rejection.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "non-atq exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}
