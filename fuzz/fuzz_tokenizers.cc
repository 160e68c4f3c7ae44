// libFuzzer target for every tokenizer file atq reads: the first byte picks the reader, the rest is the file.
//   0: llama2.c tokenizer.bin          1: GPT-2 encoder.json and vocab.bpe, split at the first 0xFF byte
//   2: SentencePiece .model            3: the vocabulary of a GGUF file
// Whatever loads must then encode a fixed English sample and the input's own bytes into ids inside the
// vocabulary and decode them again. Only atq::Error may come out; anything else is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"
#include "io/tokenizer.h"
#include "util/error.h"
#include "fuzz_files.h"

namespace {

// Encoding cost grows with the text; the reader is what is fuzzed, so the text stays short.
constexpr size_t kMaxEncodedBytes = 256;
constexpr std::string_view kSample = "Once upon a time, a little girl named Lily found a needle in her room. \xE2\x9C\x93 123\n";

[[noreturn]] void Die(const char* what) { atq::fuzz::Die("fuzz_tokenizers", what); }
using atq::fuzz::WriteFile;

std::string TempPath(const char* what) {
  return (std::filesystem::temp_directory_path() / (std::string("atq_fuzz_tok_") + std::to_string(::getpid()) + "_" + what))
      .string();
}

void Exercise(const atq::Tokenizer& tokenizer, std::string_view input) {
  for (std::string_view text : {kSample, input.substr(0, kMaxEncodedBytes)}) {
    const std::vector<int32_t> ids = tokenizer.Encode(text);
    for (int32_t id : ids) {
      if (id < 0 || id >= tokenizer.vocab_size()) Die("an id outside the vocabulary");
    }
    tokenizer.Decode(ids);
  }
  if (tokenizer.bos_id() >= tokenizer.vocab_size() || tokenizer.eos_id() >= tokenizer.vocab_size()) {
    Die("BOS/EOS outside the vocabulary");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view file(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    std::unique_ptr<atq::Tokenizer> tokenizer;
    switch (data[0] % 4) {
      case 0: {
        const std::string path = TempPath("tokenizer.bin");
        if (!WriteFile(path, file)) return 0;
        // The vocabulary size comes from the model; try the file's own claim and a mismatching one.
        tokenizer = atq::LoadLlama2cTokenizer(path, data[0] & 4 ? 32 : 512);
        break;
      }
      case 1: {
        const size_t split = file.find('\xFF');
        const std::string encoder = TempPath("encoder.json"), merges = TempPath("vocab.bpe");
        if (!WriteFile(encoder, file.substr(0, split)) ||
            !WriteFile(merges, split == std::string_view::npos ? std::string_view() : file.substr(split + 1))) {
          return 0;
        }
        tokenizer = atq::LoadGpt2Tokenizer(encoder, merges);
        break;
      }
      case 2: {
        const std::string path = TempPath("sp.model");
        if (!WriteFile(path, file)) return 0;
        tokenizer = atq::LoadSentencePieceTokenizer(path);
        break;
      }
      default: {
        const atq::GgufFile gguf =
            atq::GgufFile::FromBytes("fuzz.gguf", std::vector<uint8_t>(file.begin(), file.end()));
        tokenizer = atq::LoadGgufTokenizer(gguf);
        break;
      }
    }
    Exercise(*tokenizer, file);
  } catch (const atq::Error&) {
  }
  return 0;
}
