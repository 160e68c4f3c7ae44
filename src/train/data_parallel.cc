// Data parallelism over c10d's ProcessGroupGloo and TCPStore.
#include "train/data_parallel.h"

#include <cerrno>
#include <cstdlib>
#include <string_view>

#include <torch/torch.h>

#ifdef ATQ_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include "util/error.h"
#include "util/log.h"
#include "util/parse.h"

namespace atq {
namespace {

int EnvInt(const char* name, int low, int high) {
  const char* value = std::getenv(name);
  Require(value != nullptr && *value != '\0', "environment: {} is not set (torchrun sets RANK, WORLD_SIZE, "
          "MASTER_ADDR, MASTER_PORT)", name);
  const int64_t parsed = ParseInt(value, fmt::format("environment {}", name));
  Require(parsed >= low && parsed <= high, "environment: {}={} is outside [{}, {}]", name, value, low, high);
  return static_cast<int>(parsed);
}

// Seconds since `since`.
double Since(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

std::optional<DistributedEnv> DistributedFromEnvironment() {
  const char* world = std::getenv("WORLD_SIZE");
  if (world == nullptr || *world == '\0') return std::nullopt;
  DistributedEnv env;
  env.world_size = EnvInt("WORLD_SIZE", 1, 1 << 16);
  env.rank = EnvInt("RANK", 0, env.world_size - 1);
  env.local_rank = std::getenv("LOCAL_RANK") ? EnvInt("LOCAL_RANK", 0, env.world_size - 1) : env.rank;
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') env.master_addr = addr;
  if (env.world_size > 1) env.master_port = EnvInt("MASTER_PORT", 1, 65535);
  return env;
}

std::pair<int64_t, int64_t> WorkerShare(int64_t batch, int rank, int world_size) {
  Require(world_size >= 1 && rank >= 0 && rank < world_size, "data parallel: rank {} of {} workers", rank, world_size);
  return {batch * rank / world_size, batch * (rank + 1) / world_size};
}

std::pair<int64_t, int64_t> WorkerRows(int64_t batch, int rank, int world_size) {
  Require(world_size >= 1 && batch % world_size == 0,
          "data parallel: a global batch of {} windows does not split evenly over {} workers; choose a multiple",
          batch, world_size);
  return WorkerShare(batch, rank, world_size);
}

#ifdef ATQ_WITH_GLOO

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

namespace {

// Waits for a collective; a peer that died or timed out becomes an error that says so.
void Wait(const c10::intrusive_ptr<c10d::Work>& work, const DistributedEnv& env, std::string_view what) {
  try {
    work->wait();
  } catch (const std::exception& error) {
    Fail("data parallel (rank {} of {}): {} failed: another worker stopped or stopped answering ({})", env.rank,
         env.world_size, what, error.what());
  }
}

}  // namespace

DataParallel::DataParallel(const DistributedEnv& env, std::chrono::milliseconds timeout) : env_(env) {
  Require(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "data parallel: rank {} of {} workers",
          env.rank, env.world_size);
  group_ = std::make_unique<Group>();
  try {
    c10d::TCPStoreOptions store;
    store.port = static_cast<uint16_t>(env.master_port);
    store.isServer = env.rank == 0;
    store.numWorkers = static_cast<size_t>(env.world_size);
    store.waitWorkers = true;
    store.timeout = timeout;
    group_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
    group_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(group_->store, env.rank, env.world_size, options);
  } catch (const std::exception& error) {
    Fail("data parallel: rank {} of {} could not join {}:{} ({})", env.rank, env.world_size, env.master_addr,
         env.master_port, error.what());
  }
  LogInfo("data parallel: rank {} of {} joined {}:{}", env.rank, env.world_size, env.master_addr, env.master_port);
}

DataParallel::~DataParallel() = default;

void DataParallel::AverageGradients(const std::vector<torch::Tensor>& parameters, int64_t bucket_bytes) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& parameter : parameters) {
    if (!parameter.requires_grad()) continue;
    if (!parameter.grad().defined()) parameter.mutable_grad() = torch::zeros_like(parameter);
    grads.push_back(parameter.grad());
  }
  size_t first = 0;
  while (first < grads.size()) {
    // One bucket: consecutive gradients up to bucket_bytes (at least one), flattened into one buffer.
    size_t last = first;
    int64_t bytes = 0;
    while (last < grads.size() && (last == first || bytes + grads[last].nbytes() <= static_cast<size_t>(bucket_bytes))) {
      bytes += static_cast<int64_t>(grads[last].nbytes());
      ++last;
    }
    std::vector<torch::Tensor> flat_parts;
    for (size_t i = first; i < last; ++i) flat_parts.push_back(grads[i].reshape({-1}));
    std::vector<torch::Tensor> bucket = {torch::cat(flat_parts)};
    Wait(group_->group->allreduce(bucket), env_, "a gradient all-reduce");
    bucket[0].div_(env_.world_size);
    int64_t offset = 0;
    for (size_t i = first; i < last; ++i) {
      const int64_t count = grads[i].numel();
      grads[i].copy_(bucket[0].slice(0, offset, offset + count).view(grads[i].sizes()));
      offset += count;
    }
    first = last;
  }
  communication_seconds_ += Since(start);
}

std::vector<double> DataParallel::Sum(const std::vector<double>& values) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> tensor = {torch::tensor(values, torch::kFloat64)};
  Wait(group_->group->allreduce(tensor), env_, "an all-reduce of the losses");
  communication_seconds_ += Since(start);
  const torch::Tensor& sum = tensor[0];
  return std::vector<double>(sum.data_ptr<double>(), sum.data_ptr<double>() + sum.numel());
}

void DataParallel::Average(const std::vector<torch::Tensor>& tensors) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& tensor : tensors) {
    std::vector<torch::Tensor> one = {tensor.detach().contiguous()};
    Wait(group_->group->allreduce(one), env_, "an all-reduce of the running statistics");
    one[0].div_(env_.world_size);
    if (!one[0].is_same(tensor)) tensor.detach().copy_(one[0]);
  }
  communication_seconds_ += Since(start);
}

void DataParallel::BroadcastFromFirst(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& tensor : tensors) {
    std::vector<torch::Tensor> one = {tensor.detach().contiguous()};
    Wait(group_->group->broadcast(one), env_, "the broadcast of the starting weights");
    if (!one[0].is_same(tensor)) tensor.detach().copy_(one[0]);
  }
}

void DataParallel::Barrier() { Wait(group_->group->barrier(), env_, "a barrier"); }

#else  // built without c10d's Gloo headers

struct DataParallel::Group {};

DataParallel::DataParallel(const DistributedEnv& env, std::chrono::milliseconds) : env_(env) {
  Fail("data parallel: this atq was built without c10d's Gloo (install libgloo-dev and rebuild)");
}
DataParallel::~DataParallel() = default;
void DataParallel::AverageGradients(const std::vector<torch::Tensor>&, int64_t) {}
std::vector<double> DataParallel::Sum(const std::vector<double>& values) { return values; }
void DataParallel::Average(const std::vector<torch::Tensor>&) {}
void DataParallel::BroadcastFromFirst(const std::vector<torch::Tensor>&) {}
void DataParallel::Barrier() {}

#endif

}  // namespace atq
