// Training tensors from an ImageSet: normalization, seeded shuffling into batches, light seeded augmentation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "io/idx.h"

namespace atq {

// x = (pixel / 255 - mean) / std.
struct Normalization {
  double mean = 0;
  double std = 1;
};

// Fashion-MNIST's training-set statistics, the convention of atq's fixtures (and torchvision recipes).
constexpr Normalization kFashionMnistNormalization{0.2860, 0.3530};

// Mean and standard deviation of pixel / 255 over the whole set (std 1 for a constant set).
Normalization ComputeNormalization(const ImageSet& set);

// A labelled image set as tensors.
struct ImageTensors {
  torch::Tensor images;  // [N, 1, H, W] float32, normalized
  torch::Tensor labels;  // [N] int64
  Normalization normalization;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

// The first `limit` images of `set` (all when limit <= 0 or larger than the set), normalized.
ImageTensors ToTensors(const ImageSet& set, Normalization normalization, int64_t limit = 0);

// The number of classes the labels imply: max label + 1 (0 for an empty set).
int64_t ClassCount(const torch::Tensor& labels);

// A 64-bit seed derived from a base seed and a stream number (epoch, batch), SplitMix64-mixed so that nearby
// inputs give unrelated streams.
uint64_t MixSeed(uint64_t seed, uint64_t stream);

// 0..count-1 in an order fixed by `seed` (Fisher-Yates with std::mt19937_64, identical on every platform).
std::vector<int64_t> ShuffledOrder(int64_t count, uint64_t seed);

// Random crop after zero-padding by `padding` pixels on each side (padding with the value of a black pixel,
// as cropping before normalization would), then a horizontal flip with probability 1/2, per image, seeded.
// images: [B, C, H, W] normalized -> [B, C, H, W]
torch::Tensor AugmentBatch(const torch::Tensor& images, Normalization normalization, uint64_t seed,
                           int64_t padding = 2);

struct Batch {
  torch::Tensor images;  // [B, 1, H, W]
  torch::Tensor labels;  // [B]
};

// One epoch's batches, built on demand: shuffled by `seed` (or in order), the last batch possibly smaller,
// each augmented with its own seed when `augment` is set, so a batch depends only on (seed, index).
class EpochBatches {
 public:
  EpochBatches(const ImageTensors& data, int64_t batch_size, uint64_t seed, bool shuffle, bool augment);

  int64_t size() const { return batch_count_; }
  Batch Get(int64_t index) const;

 private:
  const ImageTensors& data_;
  int64_t batch_size_;
  uint64_t seed_;
  bool augment_;
  int64_t batch_count_;
  torch::Tensor order_;  // [N] int64
};

}  // namespace atq
