// atq: one binary, `atq <command>`. Exit status 0 success, 1 failure, 2 bad usage.
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <string>

#include <CLI/CLI.hpp>

#include "command.h"
#ifdef ATQ_WITH_TORCH
#include "torch_workers.h"
#endif
#include "util/error.h"
#include "util/log.h"

int main(int argc, char** argv) {
  // Buffers of megabytes (a block's weights, a layer's codes, activations) come and go while a model streams
  // through. glibc raises its mmap threshold after the first such free and from then on keeps freed buffers in its
  // heaps, so resident memory climbs past what is live: quantizing tinyllama-1.1b to ternary peaked at 1.85 GB of
  // anonymous memory that way, 1.08 GB with a fixed threshold (scripts/bench_large_model.py measures it).
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
#ifdef ATQ_WITH_TORCH
  atq::cli::RecordCommandLine(argc, argv);  // --nproc starts its workers with it
#endif
  using atq::cli::RunFn;
  CLI::App app{"atq: ternary and low-bit quantization of neural networks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("atq ") + ATQ_VERSION);
  int verbosity = 0;
  std::string log_level;
  app.add_flag("-v,--verbose", verbosity, "More detail in the log (repeat for debug)");
  app.add_option("--log-level", log_level, "error, warn, info or debug (default: $ATQ_LOG_LEVEL or info)");

  std::map<CLI::App*, RunFn> runners;
  std::map<CLI::App*, bool> float_math;
  for (const atq::cli::Command& command : atq::cli::AllCommands()) {
    CLI::App* sub = app.add_subcommand(command.name, command.help);
    runners[sub] = command.declare(*sub);
    float_math[sub] = command.float_math;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int status = app.exit(error);
    return status == 0 ? 0 : 2;
  }

  const auto run = [&]() -> int {
    try {
      if (!log_level.empty()) atq::SetLogLevel(atq::ParseLogLevel(log_level));
      if (verbosity > 0) atq::SetLogLevel(verbosity > 1 ? atq::LogLevel::kDebug : atq::LogLevel::kInfo);
      for (CLI::App* sub : app.get_subcommands()) {
#ifdef ATQ_WITH_TORCH
        if (float_math.at(sub)) atq::cli::PreferFittingOpenBlasCore();
#endif
        return runners.at(sub)();
      }
      return 2;
    } catch (const atq::UsageError& error) {
      std::fprintf(stderr, "error: %s\nRun with --help for usage.\n", error.what());
      return 2;
    } catch (const atq::Error& error) {
      std::fprintf(stderr, "error: %s\n", error.what());
      return 1;
    } catch (const std::exception& error) {
      std::fprintf(stderr, "error: internal: %s\n", error.what());
      return 1;
    }
  };
  const int status = run();
  // The command's own objects are gone and its files closed and renamed; what is left are the static objects of
  // the libraries, libtorch's thousands of operator registrations among them, whose destructors took 8% of a short
  // `atq perplexity` run. Leave without them.
  std::fflush(nullptr);
  std::_Exit(status);
}
