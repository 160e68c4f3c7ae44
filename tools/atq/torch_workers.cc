// The local launcher of data-parallel workers.
#include "torch_workers.h"

#include <dlfcn.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "util/error.h"
#include "util/log.h"

extern char** environ;

namespace atq::cli {
namespace {

std::vector<std::string>& CommandLine() {
  static std::vector<std::string> line;
  return line;
}

// A port the kernel reports free on 127.0.0.1 now (bound to port 0, then released for rank 0's store).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  Require(fd >= 0, "--nproc: no socket for the workers' rendezvous ({})", std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  close(fd);
  Require(ok, "--nproc: no free port on 127.0.0.1 for the workers' rendezvous ({})", std::strerror(errno));
  return ntohs(address.sin_port);
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {}", WTERMSIG(status));
  return "stopped";
}

}  // namespace

void RecordCommandLine(int argc, char** argv) { CommandLine().assign(argv, argv + argc); }

void AddWorkerFlags(CLI::App& app, Workers& workers) {
  app.add_option("--nproc", workers.nproc, "Data-parallel worker processes on this machine (torch.distributed, Gloo); "
                                           "the global batch is split between them")
      ->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--dist-timeout", workers.timeout_seconds, "Seconds a worker waits for the others before failing")
      ->check(CLI::Range(1, 86400))->capture_default_str();
}

namespace {

// Starts this process again with NAME=VALUE in its environment, for a library that reads the variable once, when
// it loads (libgomp, OpenBLAS). Returns only where exec fails, with the variable set for any later child.
void RestartWith(const char* name, const char* value) {
  const std::vector<std::string>& line = CommandLine();
  if (line.empty() || setenv(name, value, 1) != 0) return;
  std::vector<std::string> arguments = line;
  std::vector<char*> argv;
  for (std::string& a : arguments) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv("/proc/self/exe", argv.data());
  LogWarn("could not restart with {}={} ({}); going on without it", name, value, std::strerror(errno));
}

}  // namespace

// libgomp (libtorch's intra-op threads) spins its idle threads by default, and the matrix products of the same step
// run on OpenBLAS's own threads, which those spinning threads take cores from: 6 steps of gpt2-mini ternary QAT on
// 2 cores ran at 219 tokens/s by default, 240-246 with OMP_WAIT_POLICY=PASSIVE and 136 with ACTIVE. libgomp reads
// the variable once, when it loads, so a training command that finds it unset sets it and starts itself again (a
// user's own setting is kept).
void PreferPassiveOpenMp() {
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) RestartWith("OMP_WAIT_POLICY", "PASSIVE");
}

// OpenBLAS picks its kernels by CPU model when it loads, and a build older than the CPU falls back to the oldest
// x86-64 ones: Debian 12's 0.3.21 takes a Xeon of model 207 (Emerald Rapids, AVX-512) for a Prescott, and there
// libtorch's float32 product of 64 rows by a 4096 x 4096 matrix took 75-112 ms instead of 21 (SkylakeX kernels),
// gpt2-mini QAT ran at 119 tokens/s instead of 275. Where OpenBLAS reports such a pre-AVX core on a CPU with AVX2
// or AVX-512, atq starts itself again with OPENBLAS_CORETYPE naming the kernels the CPU runs (a user's own setting
// is kept; another BLAS has no openblas_get_corename and is left alone).
void PreferFittingOpenBlasCore() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  using CoreName = char* (*)();
  const auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (core_name == nullptr || core_name() == nullptr) return;
  const std::string core = core_name();
  static const char* const kPreAvx[] = {"Unknown", "Katmai",   "Coppermine", "Northwood", "Prescott", "Banias",
                                        "Atom",    "Core2",    "Penryn",     "Dunnington", "Nehalem"};
  if (std::find(std::begin(kPreAvx), std::end(kPreAvx), core) == std::end(kPreAvx)) return;
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!avx512 && !avx2) return;
  const char* fitting = avx512 ? "SkylakeX" : "Haswell";
  LogDebug("OpenBLAS chose its {} kernels on a CPU with {}; restarting with OPENBLAS_CORETYPE={}", core,
           avx512 ? "AVX-512" : "AVX2", fitting);
  RestartWith("OPENBLAS_CORETYPE", fitting);
}

std::optional<int> StartWorkers(Workers& workers, int& threads) {
  PreferPassiveOpenMp();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (const std::optional<DistributedEnv> env = DistributedFromEnvironment(); env && env->world_size > 1) {
    if (env->rank > 0) SetLogLevel(LogLevel::kWarn);
    if (threads == 0) threads = static_cast<int>(std::max(1u, cores / static_cast<unsigned>(env->world_size)));
    workers.parallel = std::make_unique<DataParallel>(*env, std::chrono::seconds(workers.timeout_seconds));
    return std::nullopt;
  }
  if (workers.nproc <= 1) return std::nullopt;
  const std::vector<std::string>& line = CommandLine();
  Require(!line.empty(), "--nproc: the command line was not recorded");
  const int port = FreePort();
  const int share = threads > 0 ? std::max(1, threads / workers.nproc)
                                : static_cast<int>(std::max(1u, cores / static_cast<unsigned>(workers.nproc)));
  LogInfo("starting {} workers on 127.0.0.1:{} ({} threads each)", workers.nproc, port, share);
  std::vector<pid_t> pids;
  for (int rank = 0; rank < workers.nproc; ++rank) {
    std::vector<std::string> variables;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry(*e);
      bool ours = false;
      for (const char* name : {"RANK=", "WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT=", "LOCAL_RANK="}) {
        ours = ours || entry.rfind(name, 0) == 0;
      }
      if (!ours) variables.push_back(entry);
    }
    variables.push_back(fmt::format("RANK={}", rank));
    variables.push_back(fmt::format("LOCAL_RANK={}", rank));
    variables.push_back(fmt::format("WORLD_SIZE={}", workers.nproc));
    variables.push_back("MASTER_ADDR=127.0.0.1");
    variables.push_back(fmt::format("MASTER_PORT={}", port));
    std::vector<std::string> arguments;
    for (size_t i = 0; i < line.size(); ++i) {  // this worker's --threads replaces the command line's
      if (line[i] == "--threads") {
        ++i;
        continue;
      }
      if (line[i].rfind("--threads=", 0) == 0) continue;
      arguments.push_back(line[i]);
    }
    arguments.push_back("--threads");
    arguments.push_back(std::to_string(share));
    std::vector<char*> argv, envp;
    for (std::string& a : arguments) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (std::string& v : variables) envp.push_back(v.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int error = posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data());
    if (error != 0) {
      for (const pid_t started : pids) kill(started, SIGTERM);
      Fail("--nproc: could not start worker {} ({})", rank, std::strerror(error));
    }
    pids.push_back(pid);
  }
  // The first worker to fail stops the run: the others are terminated rather than left waiting on it.
  int result = 0;
  size_t running = pids.size();
  while (running > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end()) continue;
    --running;
    const int rank = static_cast<int>(it - pids.begin());
    *it = -1;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && result == 0) {
      result = 1;
      LogMessage(LogLevel::kError, fmt::format("worker {} {}; stopping the others", rank, Describe(status)));
      for (const pid_t other : pids) {
        if (other > 0) kill(other, SIGTERM);
      }
    }
  }
  return result;
}

}  // namespace atq::cli
