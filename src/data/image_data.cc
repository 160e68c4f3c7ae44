// Image sets as normalized tensors, shuffled and augmented deterministically from a seed.
#include "data/image_data.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "util/error.h"

namespace atq {

Normalization ComputeNormalization(const ImageSet& set) {
  if (set.pixels.empty()) return {};
  double sum = 0, sum_squares = 0;
  for (const uint8_t pixel : set.pixels) {
    const double x = pixel / 255.0;
    sum += x;
    sum_squares += x * x;
  }
  const double n = static_cast<double>(set.pixels.size());
  const double mean = sum / n;
  const double variance = std::max(0.0, sum_squares / n - mean * mean);
  const double std = std::sqrt(variance);
  return {mean, std > 1e-12 ? std : 1.0};
}

ImageTensors ToTensors(const ImageSet& set, Normalization normalization, int64_t limit) {
  Require(set.pixels.size() == static_cast<size_t>(set.count * set.rows * set.cols) &&
              set.labels.size() == static_cast<size_t>(set.count),
          "image set of {} images of {}x{} holds {} pixels and {} labels", set.count, set.rows, set.cols,
          set.pixels.size(), set.labels.size());
  Require(normalization.std > 0, "normalization std must be positive, got {}", normalization.std);
  const int64_t count = limit > 0 ? std::min(limit, set.count) : set.count;
  ImageTensors tensors;
  tensors.normalization = normalization;
  // from_blob does not copy; clone/to() below do, so the result never aliases `set`.
  const torch::Tensor pixels =
      torch::from_blob(const_cast<uint8_t*>(set.pixels.data()), {count, 1, set.rows, set.cols}, torch::kUInt8);
  tensors.images = pixels.to(torch::kFloat32)
                       .div_(255.0)
                       .sub_(normalization.mean)
                       .div_(normalization.std);
  tensors.labels = torch::from_blob(const_cast<uint8_t*>(set.labels.data()), {count}, torch::kUInt8)
                       .to(torch::kInt64);
  return tensors;
}

int64_t ClassCount(const torch::Tensor& labels) {
  if (!labels.defined() || labels.numel() == 0) return 0;
  return labels.max().item<int64_t>() + 1;
}

uint64_t MixSeed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<int64_t> ShuffledOrder(int64_t count, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(seed);
  // std::shuffle's and uniform_int_distribution's algorithms differ between standard libraries; this does not.
  for (size_t i = order.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng() % i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

torch::Tensor AugmentBatch(const torch::Tensor& images, Normalization normalization, uint64_t seed,
                           int64_t padding) {
  Require(images.dim() == 4, "AugmentBatch expects [B, C, H, W] images, got {} dimensions", images.dim());
  const int64_t batch = images.size(0), height = images.size(2), width = images.size(3);
  const double black = (0.0 - normalization.mean) / normalization.std;
  // padded: [B, C, H + 2p, W + 2p]
  const torch::Tensor padded =
      torch::constant_pad_nd(images, {padding, padding, padding, padding}, black);
  torch::Tensor out = torch::empty_like(images);
  std::mt19937_64 rng(seed);
  const uint64_t offsets = static_cast<uint64_t>(2 * padding + 1);
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t top = static_cast<int64_t>(rng() % offsets);
    const int64_t left = static_cast<int64_t>(rng() % offsets);
    const bool flip = (rng() & 1) != 0;
    torch::Tensor crop = padded[i].narrow(1, top, height).narrow(2, left, width);  // [C, H, W]
    if (flip) crop = crop.flip({2});
    out[i].copy_(crop);
  }
  return out;
}

EpochBatches::EpochBatches(const ImageTensors& data, int64_t batch_size, uint64_t seed, bool shuffle,
                           bool augment)
    : data_(data), batch_size_(batch_size), seed_(seed), augment_(augment) {
  Require(batch_size > 0, "batch size must be positive, got {}", batch_size);
  const int64_t count = data.size();
  batch_count_ = (count + batch_size - 1) / batch_size;
  if (shuffle) {
    std::vector<int64_t> order = ShuffledOrder(count, seed);
    order_ = torch::tensor(order, torch::kInt64);
  }
}

Batch EpochBatches::Get(int64_t index) const {
  Require(index >= 0 && index < batch_count_, "batch {} out of range (epoch has {})", index, batch_count_);
  const int64_t begin = index * batch_size_;
  const int64_t length = std::min(batch_size_, data_.size() - begin);
  Batch batch;
  if (order_.defined()) {
    const torch::Tensor indices = order_.narrow(0, begin, length);
    batch.images = data_.images.index_select(0, indices);
    batch.labels = data_.labels.index_select(0, indices);
  } else {
    batch.images = data_.images.narrow(0, begin, length);
    batch.labels = data_.labels.narrow(0, begin, length);
  }
  if (augment_) {
    batch.images = AugmentBatch(batch.images, data_.normalization, MixSeed(seed_, static_cast<uint64_t>(index)));
  }
  return batch;
}

}  // namespace atq
