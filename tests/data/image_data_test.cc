// Training data: normalization conventions, seeded shuffling and augmentation, subsets.
#include "data/image_data.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "util/error.h"

namespace atq {
namespace {

// `count` images of rows x cols whose pixels are (image * 7 + position) % 256, labels image % 10.
ImageSet MakeSet(int64_t count, int64_t rows, int64_t cols) {
  ImageSet set;
  set.count = count;
  set.rows = rows;
  set.cols = cols;
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t p = 0; p < rows * cols; ++p) set.pixels.push_back(static_cast<uint8_t>((i * 7 + p) % 256));
    set.labels.push_back(static_cast<uint8_t>(i % 10));
  }
  return set;
}

TEST(Data, FashionMnistNormalizationConvention) {
  ImageSet set;
  set.count = 1;
  set.rows = 1;
  set.cols = 3;
  set.pixels = {0, 255, 51};
  set.labels = {4};
  const ImageTensors tensors = ToTensors(set, kFashionMnistNormalization);
  ASSERT_EQ(tensors.images.sizes(), (std::vector<int64_t>{1, 1, 1, 3}));
  EXPECT_EQ(tensors.images.scalar_type(), torch::kFloat32);
  EXPECT_EQ(tensors.labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(tensors.labels[0].item<int64_t>(), 4);
  // float32 arithmetic on values of order 1: a few ulps.
  constexpr double kTolerance = 1e-6;
  EXPECT_NEAR(tensors.images[0][0][0][0].item<double>(), (0.0 - 0.2860) / 0.3530, kTolerance);
  EXPECT_NEAR(tensors.images[0][0][0][1].item<double>(), (1.0 - 0.2860) / 0.3530, kTolerance);
  EXPECT_NEAR(tensors.images[0][0][0][2].item<double>(), (0.2 - 0.2860) / 0.3530, kTolerance);
}

TEST(Data, ComputedNormalization) {
  ImageSet set;
  set.count = 2;
  set.rows = 1;
  set.cols = 2;
  set.pixels = {0, 255, 255, 0};
  set.labels = {0, 1};
  const Normalization normalization = ComputeNormalization(set);
  EXPECT_DOUBLE_EQ(normalization.mean, 0.5);
  EXPECT_DOUBLE_EQ(normalization.std, 0.5);
  const ImageTensors tensors = ToTensors(set, normalization);
  EXPECT_NEAR(tensors.images.mean().item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(tensors.images.std(/*unbiased=*/false).item<double>(), 1.0, 1e-6);
  // A constant set has no spread; std 1 keeps the division defined.
  set.pixels = {9, 9, 9, 9};
  EXPECT_DOUBLE_EQ(ComputeNormalization(set).std, 1.0);
}

TEST(Data, SubsetTakesTheFirstImages) {
  const ImageSet set = MakeSet(20, 3, 2);
  const ImageTensors all = ToTensors(set, {0, 1});
  const ImageTensors first = ToTensors(set, {0, 1}, 5);
  EXPECT_EQ(all.size(), 20);
  ASSERT_EQ(first.size(), 5);
  EXPECT_TRUE(torch::equal(first.images, all.images.narrow(0, 0, 5)));
  EXPECT_TRUE(torch::equal(first.labels, all.labels.narrow(0, 0, 5)));
  EXPECT_EQ(ToTensors(set, {0, 1}, 1000).size(), 20);
  EXPECT_EQ(ClassCount(all.labels), 10);
}

TEST(Data, ShuffleIsSeededPermutation) {
  const std::vector<int64_t> a = ShuffledOrder(1000, 42);
  EXPECT_EQ(a, ShuffledOrder(1000, 42));
  EXPECT_NE(a, ShuffledOrder(1000, 43));
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  // Not the identity (the chance of that is 1/1000!).
  EXPECT_NE(a, sorted);
  // Nearby seeds and streams give unrelated streams.
  EXPECT_NE(MixSeed(1, 0), MixSeed(1, 1));
  EXPECT_NE(MixSeed(1, 0), MixSeed(0, 1));
}

TEST(Data, EpochBatchesCoverEveryImageOnceAndRepeat) {
  const ImageTensors data = ToTensors(MakeSet(103, 4, 4), {0, 1});
  const EpochBatches batches(data, 25, /*seed=*/7, /*shuffle=*/true, /*augment=*/false);
  const EpochBatches again(data, 25, /*seed=*/7, /*shuffle=*/true, /*augment=*/false);
  ASSERT_EQ(batches.size(), 5);  // 4 x 25 + 3
  std::multiset<float> seen_first_pixels;
  int64_t total = 0;
  for (int64_t i = 0; i < batches.size(); ++i) {
    const Batch batch = batches.Get(i);
    const Batch repeat = again.Get(i);
    EXPECT_TRUE(torch::equal(batch.images, repeat.images));
    EXPECT_TRUE(torch::equal(batch.labels, repeat.labels));
    EXPECT_EQ(batch.images.size(0), i < 4 ? 25 : 3);
    total += batch.labels.size(0);
  }
  EXPECT_EQ(total, 103);
  // Every image appears once: the sum of all images is the same in any order.
  torch::Tensor sum = torch::zeros({1, 4, 4});
  for (int64_t i = 0; i < batches.size(); ++i) sum += batches.Get(i).images.sum(0);
  EXPECT_TRUE(torch::allclose(sum, data.images.sum(0), 1e-5, 1e-4));
  // Another seed, another order.
  const EpochBatches other(data, 25, /*seed=*/8, /*shuffle=*/true, /*augment=*/false);
  EXPECT_FALSE(torch::equal(other.Get(0).labels, batches.Get(0).labels));
  // Unshuffled: in order.
  const EpochBatches ordered(data, 25, 7, /*shuffle=*/false, /*augment=*/false);
  EXPECT_TRUE(torch::equal(ordered.Get(1).images, data.images.narrow(0, 25, 25)));
  EXPECT_THROW(EpochBatches(data, 0, 7, true, false), Error);
}

TEST(Data, AugmentationIsSeededCropAndFlip) {
  const Normalization normalization{0.25, 0.5};
  const ImageTensors data = ToTensors(MakeSet(64, 6, 6), normalization);
  const torch::Tensor a = AugmentBatch(data.images, normalization, 5);
  EXPECT_TRUE(torch::equal(a, AugmentBatch(data.images, normalization, 5)));
  EXPECT_FALSE(torch::equal(a, AugmentBatch(data.images, normalization, 6)));
  ASSERT_EQ(a.sizes(), data.images.sizes());
  // Padding is a black pixel in normalized units; cropping never invents other values.
  const double black = (0.0 - normalization.mean) / normalization.std;
  for (int64_t i = 0; i < 64; ++i) {
    const torch::Tensor image = a[i].flatten();
    const torch::Tensor source = data.images[i].flatten();
    for (int64_t p = 0; p < image.size(0); ++p) {
      const float value = image[p].item<float>();
      ASSERT_TRUE(std::abs(value - black) < 1e-6 || source.eq(value).any().item<bool>()) << value;
    }
  }
  // Without padding the only change left is the flip: each image is itself or its mirror, both occur.
  const torch::Tensor flipped_only = AugmentBatch(data.images, normalization, 5, /*padding=*/0);
  int64_t flips = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const bool same = torch::equal(flipped_only[i], data.images[i]);
    const bool mirror = torch::equal(flipped_only[i], data.images[i].flip({2}));
    ASSERT_TRUE(same || mirror) << i;
    flips += mirror && !same;
  }
  EXPECT_GT(flips, 10);
  EXPECT_LT(flips, 54);
  // Augmented batches depend only on (seed, batch index).
  const EpochBatches batches(data, 16, 3, true, /*augment=*/true);
  EXPECT_TRUE(torch::equal(batches.Get(2).images, EpochBatches(data, 16, 3, true, true).Get(2).images));
  EXPECT_FALSE(torch::equal(batches.Get(2).images, EpochBatches(data, 16, 3, true, false).Get(2).images));
}

}  // namespace
}  // namespace atq
