// Image datasets by name: default folders, train and test splits normalized.
#include "data/datasets.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "util/error.h"

namespace atq {
namespace {

bool IsFashionMnist(const std::string& dataset) {
  return dataset == "fashion_mnist" || dataset == "fashion-mnist" || dataset == "fashionmnist";
}

}  // namespace

std::string DefaultDataDir(const std::string& dataset) {
  std::vector<std::string> candidates;
  if (IsFashionMnist(dataset)) {
    candidates = {"/usr/share/datasets/fashion-mnist", "data/fashion-mnist"};
  } else if (dataset == "mnist") {
    candidates = {"/usr/share/datasets/mnist", "data/mnist"};
  } else {
    Fail("dataset '{}' has no default folder: give the folder of its MNIST-format files (--data DIR)", dataset);
  }
  std::error_code error;
  for (const std::string& dir : candidates) {
    if (std::filesystem::is_directory(dir, error)) return dir;
  }
  return candidates.front();  // the loader's error will name it
}

TrainingData LoadTrainingData(const std::string& dataset, const std::string& data_dir, int64_t subset,
                              int64_t test_subset) {
  const std::string dir = data_dir.empty() ? DefaultDataDir(dataset) : data_dir;
  const ImageSet train = LoadIdxDataset(dir, /*train=*/true);
  const ImageSet test = LoadIdxDataset(dir, /*train=*/false);
  Require(train.rows == test.rows && train.cols == test.cols, "{}: training images are {}x{}, test images {}x{}",
          dir, train.rows, train.cols, test.rows, test.cols);
  Require(train.rows == train.cols, "{}: images are {}x{}; the classifiers take square images", dir, train.rows,
          train.cols);
  Require(train.count > 0 && test.count > 0, "{}: {} training and {} test images", dir, train.count, test.count);
  const Normalization normalization =
      IsFashionMnist(dataset) ? kFashionMnistNormalization : ComputeNormalization(train);
  TrainingData data;
  data.train = ToTensors(train, normalization, subset);
  data.test = ToTensors(test, normalization, test_subset);
  const auto max_label = [](const ImageSet& set) {
    return static_cast<int64_t>(*std::max_element(set.labels.begin(), set.labels.end()));
  };
  data.classes = std::max(max_label(train), max_label(test)) + 1;
  if (IsFashionMnist(dataset) || dataset == "mnist") {
    Require(data.classes <= 10, "{}: label {} in a 10-class dataset", dir, data.classes - 1);
    data.classes = 10;
  }
  data.image_size = train.rows;
  return data;
}

}  // namespace atq
