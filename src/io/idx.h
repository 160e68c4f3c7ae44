// Reads IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain: a magic word naming the element
// type and rank, big-endian dimensions, then the elements. atq reads the unsigned-byte images and labels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace atq {

// One IDX array of unsigned bytes: dims outermost first, data row-major.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Images [count, rows, cols] with one label each.
struct ImageSet {
  int64_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols, row-major
  std::vector<uint8_t> labels;  // count
};

// The largest uncompressed payload atq accepts (EMNIST, the biggest MNIST-format set, is well under it).
constexpr uint64_t kMaxIdxBytes = uint64_t{4} << 30;

// Reads one unsigned-byte IDX file of the given rank (3 for images, 1 for labels), plain or gzip (detected
// by content). Sizes are checked against the file before anything is allocated; throws atq::Error
// "PATH: what is wrong" for a missing, truncated, oversized or corrupt file or a wrong magic.
IdxArray ReadIdxFile(const std::string& path, int expected_rank);

// Reads an images file and its labels file; the counts must agree.
ImageSet LoadIdxImages(const std::string& images_path, const std::string& labels_path);

// The path of `stem` ("train-images-idx3-ubyte") in `dir`, with or without ".gz" and with the "." spelling
// some MNIST mirrors use ("train-images.idx3-ubyte"); throws atq::Error naming what was looked for.
std::string FindIdxFile(const std::string& dir, const std::string& stem);

// The training (train-*) or test (t10k-*) split of an MNIST-format folder.
ImageSet LoadIdxDataset(const std::string& dir, bool train);

}  // namespace atq
