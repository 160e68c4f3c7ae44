// LoadSentencePieceTokenizer: libsentencepiece runs inside a module opened with RTLD_DEEPBIND. Debian's
// libsentencepiece carries its own copy of protobuf 3.14 while libtorch loads the system's protobuf 3.21; linked
// into one binary, the copies bind to each other's symbols and the process aborts at start-up. Deep binding keeps
// the library on its own copy, and binaries that never read a .model file never load it.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "io/tokenizer.h"
#include "util/error.h"

namespace atq {
namespace {

using OpenFn = Tokenizer* (*)(const char* path);

// AddressSanitizer refuses RTLD_DEEPBIND (the module would bypass its allocator); sanitizer builds leave libtorch
// out, so nothing clashes there.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kDeepBind = 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr int kDeepBind = 0;
#else
constexpr int kDeepBind = RTLD_DEEPBIND;
#endif
#else
constexpr int kDeepBind = RTLD_DEEPBIND;
#endif

// $ATQ_SENTENCEPIECE_MODULE, else the module this build made, else libatq_sentencepiece.so beside the executable.
std::vector<std::string> ModuleCandidates() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("ATQ_SENTENCEPIECE_MODULE"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  }
  candidates.push_back(ATQ_SENTENCEPIECE_MODULE_PATH);
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) candidates.push_back((self.parent_path() / "libatq_sentencepiece.so").string());
  return candidates;
}

OpenFn OpenFunction() {
  static std::once_flag once;
  static OpenFn open = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    for (const std::string& path : ModuleCandidates()) {
      if (!std::filesystem::exists(path)) continue;
      void* module = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | kDeepBind);  // never closed
      if (module == nullptr) {
        failure = fmt::format("{}: {}", path, dlerror());
        continue;
      }
      open = reinterpret_cast<OpenFn>(dlsym(module, "atq_open_sentencepiece"));
      if (open != nullptr) return;
      failure = fmt::format("{}: no atq_open_sentencepiece", path);
    }
    if (failure.empty()) failure = "libatq_sentencepiece.so not found (set ATQ_SENTENCEPIECE_MODULE)";
  });
  Require(open != nullptr, "SentencePiece support is not available: {}", failure);
  return open;
}

}  // namespace

std::unique_ptr<Tokenizer> LoadSentencePieceTokenizer(const std::string& path) {
  return std::unique_ptr<Tokenizer>(OpenFunction()(path.c_str()));
}

}  // namespace atq
