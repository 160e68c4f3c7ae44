// 8-bit grayscale PNG files through libpng's simplified API: generated images and grids of samples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace atq {

struct GrayImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // row-major, height * width
};

// Encodes `image` and writes it atomically (temporary name, then rename). Throws atq::Error naming `path`.
void WriteGrayPng(const std::string& path, const GrayImage& image);

// Reads any PNG as 8-bit grayscale (libpng converts colour). Throws atq::Error naming `path`.
GrayImage ReadGrayPng(const std::string& path);

// Images of one size tiled row by row, `columns` per row, `gap` pixels of `background` between and around them.
GrayImage TileImages(const std::vector<GrayImage>& images, int64_t columns, int64_t gap = 2,
                     uint8_t background = 255);

}  // namespace atq
