// Options every language-model command shares (tokenizer, threads, device, dtype) and the model loading behind them.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "models/lm_loader.h"
#include "train/lm_loop.h"

namespace atq::cli {

struct LmCliOptions {
  std::string model;
  std::string tokenizer;
  std::string device = "cpu";
  std::string dtype = "f32";
  int threads = 0;
  bool allow_nonfinite = false;  // load NaN/Inf weights instead of refusing them
  bool dequantize = false;  // run quantized weights as float copies instead of through the packed kernels
  bool deferred = false;    // read no weight yet (LmLoadOptions::deferred): for commands that stream the model
  // The command runs whole forward passes only (perplexity, generate, logits): with --device cuda a packed model
  // then runs on atq's CUDA decoder (runtime/device_model.h) rather than through a CUDA libtorch.
  bool whole_passes = false;
  // For whole passes on the CPU: what runs a packed model (runtime/device_model.h, CpuRuntime): auto, decoder,
  // libtorch.
  std::string runtime = "auto";
};

// Adds MODEL and --tokenizer/--device/--dtype/--threads to `app`.
void AddLmOptions(CLI::App& app, LmCliOptions& options);
inline constexpr const char* kRuntimeHelp =
    "What runs a packed model on the CPU: auto (atq's decoder where the model fits it: every family, all "
    "linear layers packed; else libtorch), decoder (or an error), libtorch (libtorch's operators around atq's "
    "kernels)";

// Adds --runtime, for the commands that run whole forward passes (and sets whole_passes).
void AddLmRuntimeOption(CLI::App& app, LmCliOptions& options);

// Sets the threads, loads the model (and its tokenizer) and logs what was loaded. Quantized weights the kernels run
// stay packed (CPU, f32 activations) unless --dequantize. With whole_passes a packed model runs on atq's decoder:
// on the CPU as --runtime says (ForWholePasses), with --device cuda on atq's CUDA decoder; a float one (or
// --dequantize, or a command that needs more than whole passes) goes to libtorch, on the GPU through libtorch's
// CUDA device, which needs a CUDA build of libtorch.
LanguageModel LoadLmFromCli(const LmCliOptions& options);

// The flags of the language-model training loop (train-lm and qat): windows, schedule, validation, seed, --resume.
// --out is the command's own.
void AddLmLoopFlags(CLI::App& app, LmLoopOptions& loop);

}  // namespace atq::cli
