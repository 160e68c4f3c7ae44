// Data-parallel training on torch.distributed's c10d: workers rendezvous through a TCPStore (the environment
// torchrun sets: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), each takes its share of every global
// batch, and gradients are averaged by bucketed all-reduce (ProcessGroupGloo on the CPU) before the optimizer
// step, so every worker keeps the same weights and the run is the one process would make with the whole batch.
// A worker that dies or stops answering makes the others fail with an error naming it instead of hanging.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace atq {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// The environment's RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT/LOCAL_RANK, or nothing when WORLD_SIZE is unset.
// Throws atq::Error naming the variable that is malformed or missing.
std::optional<DistributedEnv> DistributedFromEnvironment();

class DataParallel {
 public:
  // Joins the group (rank 0 hosts the store); waits at most `timeout` for the others, and for each collective.
  // Throws atq::Error when atq was built without c10d's Gloo or the rendezvous fails.
  explicit DataParallel(const DistributedEnv& env, std::chrono::milliseconds timeout = std::chrono::minutes(5));
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  bool writes() const { return env_.rank == 0; }  // only rank 0 writes files

  // Every tensor's gradient replaced by its mean over the workers; gradients flattened into buckets of about
  // `bucket_bytes` (one all-reduce each) and copied back. A parameter that requires a gradient but got none here
  // (a worker whose share of a batch was empty) contributes zeros, so every worker reduces the same buckets;
  // parameters that require none are skipped. Throws atq::Error naming the failure (a worker gone) instead of
  // hanging.
  void AverageGradients(const std::vector<torch::Tensor>& parameters, int64_t bucket_bytes = 25 << 20);
  // Sums of the values over the workers (float64).
  std::vector<double> Sum(const std::vector<double>& values);
  // Every tensor replaced by its mean over the workers (BatchNorm's running statistics).
  void Average(const std::vector<torch::Tensor>& tensors);
  // Every worker's tensors set to rank 0's (the starting weights).
  void BroadcastFromFirst(const std::vector<torch::Tensor>& tensors);
  void Barrier();
  // Seconds spent inside collectives so far (the all-reduce share of a step).
  double communication_seconds() const { return communication_seconds_; }

 private:
  struct Group;
  DistributedEnv env_;
  std::unique_ptr<Group> group_;
  double communication_seconds_ = 0;
};

// This worker's rows of a global batch of `batch` rows: [rank * batch / world, (rank + 1) * batch / world); the
// shares differ by at most one row (a loop that weights each worker's loss by its share takes them as they are).
std::pair<int64_t, int64_t> WorkerShare(int64_t batch, int rank, int world_size);
// WorkerShare for loops whose losses are means over equal shares: throws atq::Error when world does not divide
// batch (the shares would differ and the mean gradient with them).
std::pair<int64_t, int64_t> WorkerRows(int64_t batch, int rank, int world_size);

}  // namespace atq
