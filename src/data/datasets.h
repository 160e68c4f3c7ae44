// Image datasets by name: the folder a name stands for, and the train and test splits as normalized tensors.
#pragma once

#include <cstdint>
#include <string>

#include "data/image_data.h"

namespace atq {

// The folder a dataset name stands for when no --data folder is given; throws atq::Error for a name without one.
std::string DefaultDataDir(const std::string& dataset);

// Train and test splits as normalized tensors: Fashion-MNIST uses kFashionMnistNormalization, other data the
// training split's own mean and std. `subset`/`test_subset` keep the first N images (0: all).
struct TrainingData {
  ImageTensors train;
  ImageTensors test;
  int64_t classes = 0;
  int64_t image_size = 0;
};
TrainingData LoadTrainingData(const std::string& dataset, const std::string& data_dir, int64_t subset = 0,
                              int64_t test_subset = 0);

}  // namespace atq
