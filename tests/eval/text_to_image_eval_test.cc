// The paired image comparison on known answers.
#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/text_to_image_eval.h"
#include "test_util.h"

namespace atq {
namespace {

TEST(CompareImagesTest, KnownDifferences) {
  const torch::Tensor reference = torch::full({2, 4, 4}, 100, torch::kUInt8);
  const ImageDeviation same = CompareImages(reference, reference.clone());
  EXPECT_EQ(same.images, 2);
  EXPECT_EQ(same.mean_abs_pixel, 0);
  EXPECT_TRUE(std::isinf(same.psnr_db));
  // Half the pixels 10 lower (uint8 below the reference: no wrap-around), half equal: |d| averages 5, the mean
  // square is 50, and the PSNR is 10 log10(65025 / 50) = 31.141 dB.
  torch::Tensor changed = reference.clone();
  changed.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, 2)}, 90);
  const ImageDeviation half = CompareImages(changed, reference);
  EXPECT_DOUBLE_EQ(half.mean_abs_pixel, 5.0);
  EXPECT_NEAR(half.psnr_db, 10 * std::log10(65025.0 / 50), 1e-9);
  EXPECT_NEAR(half.psnr_db, 31.141, 1e-3);
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { CompareImages(reference.slice(0, 0, 1), reference); }).empty());
}

}  // namespace
}  // namespace atq
