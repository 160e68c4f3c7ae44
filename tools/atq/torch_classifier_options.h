// Options every image-classifier command shares: the checkpoint (atq's own, a packed file, or another library's
// safetensors described by --arch/--config and the options beside them), the data folder and the threads.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "models/packed_classifier.h"
#include "models/classifier_checkpoint.h"

namespace atq::cli {

struct ClassifierCliOptions {
  std::string checkpoint;
  std::string config_path;   // --config: a JSON file in config.json's format
  ClassifierConfig foreign;  // --arch and the options beside it
  std::string data_dir;
  int threads = 0;
  PackedRun packed_run = PackedRun::kDequantized;  // how a packed file runs (evaluate: kernels)
};

// Adds CHECKPOINT and --arch/--config/--image-size/--patch-size/--channels/--classes/--dataset/--mean/--std,
// --data and --threads to `app`.
void AddClassifierOptions(CLI::App& app, ClassifierCliOptions& options);

// Loads what the options name: with --config or --arch, another library's safetensors file; else a packed file
// or an atq checkpoint.
LoadedClassifier LoadClassifierFromCli(const ClassifierCliOptions& options);

}  // namespace atq::cli
