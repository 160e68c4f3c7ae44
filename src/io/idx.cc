// IDX reader: header and sizes validated against the file (plain) or deflate's limits (gzip) before allocating.
#include "io/idx.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "util/error.h"

namespace atq {
namespace {

constexpr uint8_t kUnsignedByteType = 0x08;
// Deflate expands at most about 1032:1, so a gzip file of n bytes holds at most ~1032 n bytes; a header that
// claims more is lying and is refused before the buffer is allocated.
constexpr uint64_t kMaxDeflateRatio = 1032;
constexpr uint64_t kGzipSlackBytes = 1024;
// zlib's gzread counts in unsigned int.
constexpr uint64_t kReadChunkBytes = uint64_t{1} << 28;

class GzipReader {
 public:
  explicit GzipReader(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      Fail("{}: cannot open: {}", path, errno != 0 ? std::strerror(errno) : "out of memory");
    }
  }
  ~GzipReader() {
    if (file_ != nullptr) gzclose(file_);
  }
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;

  // Reads up to `size` bytes; fewer only at the end of the data. Corrupt compressed data throws.
  uint64_t Read(uint8_t* out, uint64_t size) {
    uint64_t done = 0;
    while (done < size) {
      const uint64_t chunk = std::min(size - done, kReadChunkBytes);
      const int got = gzread(file_, out + done, static_cast<unsigned>(chunk));
      if (got < 0) {
        int code = 0;
        const char* message = gzerror(file_, &code);
        Fail("{}: corrupt gzip data ({})", path_, message != nullptr ? message : "unknown zlib error");
      }
      done += static_cast<uint64_t>(got);
      if (static_cast<uint64_t>(got) < chunk) {
        // gzread stops short at the end of the data, or at a gzip stream cut off mid-way (Z_BUF_ERROR).
        int code = 0;
        const char* message = gzerror(file_, &code);
        if (code != Z_OK && code != Z_BUF_ERROR) {
          Fail("{}: corrupt gzip data ({})", path_, message != nullptr ? message : "unknown zlib error");
        }
        break;
      }
    }
    return done;
  }

  // Whether the file is read as-is (not gzip); valid after the first Read.
  bool plain() const { return gzdirect(file_) != 0; }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

uint32_t BigEndian32(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) | uint32_t{bytes[3]};
}

const char* RankName(int rank) { return rank == 3 ? "images" : rank == 1 ? "labels" : "arrays"; }

}  // namespace

IdxArray ReadIdxFile(const std::string& path, int expected_rank) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) Fail("{}: no such file", path);
  const uint64_t file_size = std::filesystem::file_size(path, error);
  if (error) Fail("{}: cannot read its size: {}", path, error.message());

  GzipReader reader(path);
  std::array<uint8_t, 4> magic{};
  if (reader.Read(magic.data(), magic.size()) != magic.size()) {
    Fail("{}: truncated: shorter than the 4-byte IDX magic", path);
  }
  const uint32_t magic_word = BigEndian32(magic.data());
  const uint32_t expected_magic = (uint32_t{kUnsignedByteType} << 8) | static_cast<uint32_t>(expected_rank);
  if (magic[0] != 0 || magic[1] != 0) {
    Fail("{}: not an IDX file (magic 0x{:08x}, expected 0x{:08x} for unsigned-byte {})", path, magic_word,
         expected_magic, RankName(expected_rank));
  }
  if (magic_word != expected_magic) {
    Fail("{}: IDX element type 0x{:02x} and rank {} (magic 0x{:08x}), expected unsigned bytes of rank {} "
         "(0x{:08x}) for {}",
         path, magic[2], magic[3], magic_word, expected_rank, expected_magic, RankName(expected_rank));
  }

  std::array<uint8_t, 4 * 3> dim_bytes{};
  const uint64_t dims_size = 4 * static_cast<uint64_t>(expected_rank);
  if (reader.Read(dim_bytes.data(), dims_size) != dims_size) {
    Fail("{}: truncated: the header ends before its {} dimensions", path, expected_rank);
  }
  IdxArray array;
  uint64_t elements = 1;
  for (int i = 0; i < expected_rank; ++i) {
    const uint32_t dim = BigEndian32(dim_bytes.data() + 4 * i);
    if (i > 0 && dim == 0) Fail("{}: dimension {} is 0", path, i);
    array.dims.push_back(dim);
    // Each dim < 2^32 and the running product stays <= kMaxIdxBytes < 2^33, so this never overflows.
    elements *= dim;
    if (elements > kMaxIdxBytes) Fail("{}: claims more than {} bytes of data", path, kMaxIdxBytes);
  }
  const uint64_t header_size = 4 + dims_size;
  const uint64_t total_size = header_size + elements;

  const bool plain = reader.plain();
  if (plain) {
    if (file_size < total_size) {
      Fail("{}: truncated: dimensions {} need {} bytes, the file has {}", path, fmt::join(array.dims, "x"),
           total_size, file_size);
    }
    if (file_size > total_size) {
      Fail("{}: {} bytes after the data that dimensions {} describe", path, file_size - total_size,
           fmt::join(array.dims, "x"));
    }
  } else if (total_size > file_size * kMaxDeflateRatio + kGzipSlackBytes) {
    Fail("{}: dimensions {} need {} bytes, more than {} bytes of gzip data can hold", path,
         fmt::join(array.dims, "x"), total_size, file_size);
  }

  array.data.resize(elements);
  const uint64_t got = reader.Read(array.data.data(), elements);
  if (got != elements) {
    Fail("{}: truncated: dimensions {} need {} data bytes, the file has {}", path, fmt::join(array.dims, "x"),
         elements, got);
  }
  uint8_t extra = 0;
  if (reader.Read(&extra, 1) != 0) {
    Fail("{}: more data after the {} bytes that dimensions {} describe", path, elements,
         fmt::join(array.dims, "x"));
  }
  return array;
}

ImageSet LoadIdxImages(const std::string& images_path, const std::string& labels_path) {
  IdxArray images = ReadIdxFile(images_path, 3);
  IdxArray labels = ReadIdxFile(labels_path, 1);
  if (images.dims[0] != labels.dims[0]) {
    Fail("{}: {} labels, but {} has {} images", labels_path, labels.dims[0], images_path, images.dims[0]);
  }
  ImageSet set;
  set.count = images.dims[0];
  set.rows = images.dims[1];
  set.cols = images.dims[2];
  set.pixels = std::move(images.data);
  set.labels = std::move(labels.data);
  return set;
}

std::string FindIdxFile(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(dir, error)) Fail("{}: no such data folder", dir);
  // Mirrors spell the names "train-images-idx3-ubyte" or "train-images.idx3-ubyte".
  std::string dotted = stem;
  if (const size_t dash = dotted.rfind("-idx"); dash != std::string::npos) dotted[dash] = '.';
  std::vector<std::string> tried;
  for (const std::string& name : {stem, stem + ".gz", dotted, dotted + ".gz"}) {
    const fs::path path = fs::path(dir) / name;
    if (fs::is_regular_file(path, error)) return path.string();
    tried.push_back(name);
  }
  Fail("{}: missing {} (looked for {})", dir, stem, fmt::join(tried, ", "));
}

ImageSet LoadIdxDataset(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  // Looked up one after the other, so a folder missing both reports the images first.
  const std::string images_path = FindIdxFile(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = FindIdxFile(dir, prefix + "-labels-idx1-ubyte");
  return LoadIdxImages(images_path, labels_path);
}

}  // namespace atq
