#include "io/png.h"

#include <png.h>

#include <algorithm>
#include <cstring>

#include "io/atomic_file.h"
#include "util/error.h"

namespace atq {

void WriteGrayPng(const std::string& path, const GrayImage& image) {
  Require(image.width > 0 && image.height > 0 && image.width <= 65535 && image.height <= 65535 &&
              static_cast<int64_t>(image.pixels.size()) == image.width * image.height,
          "{}: cannot write a {}x{} image from {} pixels", path, image.width, image.height, image.pixels.size());
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_GRAY;
  png_alloc_size_t size = 0;
  // First the size, then the bytes (libpng's two-call protocol for memory output).
  Require(png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr) != 0,
          "{}: PNG encoding failed: {}", path, png.message);
  std::string bytes(size, '\0');
  Require(png_image_write_to_memory(&png, bytes.data(), &size, 0, image.pixels.data(), 0, nullptr) != 0,
          "{}: PNG encoding failed: {}", path, png.message);
  bytes.resize(size);
  WriteFileAtomically(path, bytes);
}

GrayImage ReadGrayPng(const std::string& path) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  Require(png_image_begin_read_from_file(&png, path.c_str()) != 0, "{}: not a readable PNG: {}", path, png.message);
  // Bounds before the allocation they size.
  if (png.width == 0 || png.height == 0 || png.width > 65535 || png.height > 65535) {
    png_image_free(&png);
    Fail("{}: PNG of {}x{} pixels is out of range", path, png.width, png.height);
  }
  png.format = PNG_FORMAT_GRAY;
  GrayImage image{png.width, png.height, std::vector<uint8_t>(static_cast<size_t>(png.width) * png.height)};
  if (png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr) == 0) {
    const std::string message = png.message;
    png_image_free(&png);
    Fail("{}: PNG decoding failed: {}", path, message);
  }
  return image;
}

GrayImage TileImages(const std::vector<GrayImage>& images, int64_t columns, int64_t gap, uint8_t background) {
  Require(!images.empty() && columns > 0 && gap >= 0, "tiling {} images in {} columns", images.size(), columns);
  const int64_t w = images[0].width, h = images[0].height;
  for (const GrayImage& image : images) {
    Require(image.width == w && image.height == h, "tiling images of different sizes ({}x{} and {}x{})", w, h,
            image.width, image.height);
  }
  const int64_t n = static_cast<int64_t>(images.size());
  const int64_t cols = std::min(columns, n), rows = (n + cols - 1) / cols;
  GrayImage grid{cols * w + (cols + 1) * gap, rows * h + (rows + 1) * gap, {}};
  grid.pixels.assign(static_cast<size_t>(grid.width * grid.height), background);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t x0 = gap + (k % cols) * (w + gap), y0 = gap + (k / cols) * (h + gap);
    for (int64_t y = 0; y < h; ++y) {
      std::memcpy(&grid.pixels[static_cast<size_t>((y0 + y) * grid.width + x0)], &images[k].pixels[y * w], w);
    }
  }
  return grid;
}

}  // namespace atq
