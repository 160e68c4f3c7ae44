// Data-parallel workers of the training commands (train, train-lm, qat): joining a group torchrun (or any
// launcher setting RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) started, or starting N local workers with --nproc.
#pragma once

#include <memory>
#include <optional>

#include <CLI/CLI.hpp>

#include "train/data_parallel.h"

namespace atq::cli {

struct Workers {
  int nproc = 1;
  int timeout_seconds = 300;
  std::unique_ptr<DataParallel> parallel;  // set when this process is one of several workers
};

// Adds --nproc and --dist-timeout.
void AddWorkerFlags(CLI::App& app, Workers& workers);

// With WORLD_SIZE > 1 in the environment: joins the group (ranks past 0 log warnings only) and returns nothing.
// Else with --nproc N > 1: starts N copies of this command line on 127.0.0.1 with torchrun's variables, each with
// `threads` / N CPU threads (every core when 0), waits, and returns the exit status (1 when a worker failed; the
// others are stopped). Else nothing. `threads` is set to this worker's share.
std::optional<int> StartWorkers(Workers& workers, int& threads);

// The command line of this process (main.cc records it), for the launcher to start its workers with.
void RecordCommandLine(int argc, char** argv);

// Where OpenBLAS took this CPU for an older one than it is and OPENBLAS_CORETYPE is unset: starts the command again
// with the kernels the CPU runs (torch_workers.cc says why). Returns otherwise.
void PreferFittingOpenBlasCore();

}  // namespace atq::cli
