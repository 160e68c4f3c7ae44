// PNG files: what atq writes, libpng reads back pixel for pixel; grids tile in row order; bad input is named.
#include "io/png.h"

#include <fstream>

#include <gtest/gtest.h>

#include "test_util.h"

namespace atq {
namespace {

TEST(Png, WritesWhatLibpngReadsBackAndTilesGrids) {
  testutil::TempDir dir;
  GrayImage image{5, 3, {}};
  for (int i = 0; i < 15; ++i) image.pixels.push_back(static_cast<uint8_t>(17 * i));
  const std::string path = dir.File("a.png");
  WriteGrayPng(path, image);
  const GrayImage back = ReadGrayPng(path);
  EXPECT_EQ(back.width, 5);
  EXPECT_EQ(back.height, 3);
  EXPECT_EQ(back.pixels, image.pixels);

  GrayImage black{2, 2, {0, 0, 0, 0}};
  const GrayImage grid = TileImages({black, black, black}, 2, 1, 255);
  EXPECT_EQ(grid.width, 2 * 2 + 3);
  EXPECT_EQ(grid.height, 2 * 2 + 3);
  EXPECT_EQ(grid.pixels[0], 255);                      // the border
  EXPECT_EQ(grid.pixels[1 * grid.width + 1], 0);       // image 0
  EXPECT_EQ(grid.pixels[1 * grid.width + 4], 0);       // image 1
  EXPECT_EQ(grid.pixels[4 * grid.width + 4], 255);     // no image 3
  EXPECT_EQ(grid.pixels[4 * grid.width + 1], 0);       // image 2

  std::ofstream(dir.File("bad.png")) << "not a png";
  EXPECT_NE(testutil::ErrorMessageOf([&] { ReadGrayPng(dir.File("bad.png")); }).find("bad.png"), std::string::npos);
  GrayImage wrong{4, 4, {1, 2}};
  EXPECT_NE(testutil::ErrorMessageOf([&] { WriteGrayPng(dir.File("w.png"), wrong); }).find("w.png"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.File("w.png")));
}

}  // namespace
}  // namespace atq
