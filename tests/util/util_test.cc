// Logging levels, durations, atomic writes and memory mapping.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "io/tensor_info.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/strings.h"
#include "util/thread_pool.h"

namespace atq {
namespace {

namespace fs = std::filesystem;

fs::path ScratchDir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("atq_util_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Sums 0 .. count - 1 through the pool, each slice on whichever thread the pool gives it.
int64_t PoolSum(ThreadPool& pool, int64_t count) {
  std::atomic<int64_t> sum{0};
  pool.ParallelFor(count, 8, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) sum += i;
  });
  return sum.load();
}

// A CpuDecoder keeps the kernel pool it was built with; setting the kernel threads afterwards must change that
// pool, not free it under the decoder.
TEST(ThreadPool, KernelPoolIsResetInPlace) {
  ThreadPool& pool = KernelThreadPool();
  SetKernelThreads(3);
  EXPECT_EQ(&KernelThreadPool(), &pool);
  EXPECT_EQ(pool.threads(), 3);
  EXPECT_EQ(PoolSum(pool, 1000), 999 * 1000 / 2);
  int backend_calls = 0;
  SetKernelBackend(
      [&](int64_t count, int64_t grain, const std::function<void(int64_t, int64_t, int)>& body) {
        ++backend_calls;
        for (int64_t begin = 0; begin < count; begin += grain) body(begin, std::min(count, begin + grain), 0);
      },
      2);
  EXPECT_EQ(&KernelThreadPool(), &pool);
  EXPECT_EQ(pool.threads(), 2);
  EXPECT_EQ(PoolSum(pool, 1000), 999 * 1000 / 2);
  EXPECT_EQ(backend_calls, 1);
  // Back to threads of its own, after the generation counter has moved: the new workers must not run a stale job.
  SetKernelThreads(4);
  EXPECT_EQ(pool.threads(), 4);
  for (int round = 0; round < 50; ++round) ASSERT_EQ(PoolSum(pool, 4096), 4095 * 4096 / 2);
  SetKernelThreads(2);
  EXPECT_EQ(PoolSum(pool, 100), 99 * 100 / 2);
}

TEST(Strings, SplitKeepsEmptyPieces) {
  EXPECT_EQ(Split("W8A8,W6A6", ','), (std::vector<std::string>{"W8A8", "W6A6"}));
  EXPECT_EQ(Split("a,,b,", ','), (std::vector<std::string>{"a", "", "b", ""}));
  EXPECT_EQ(Split("", ','), (std::vector<std::string>{""}));
  EXPECT_EQ(Split("ternary/base3", '/'), (std::vector<std::string>{"ternary", "base3"}));
}

TEST(Log, ParsesNamesAndNumbers) {
  EXPECT_EQ(ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(ParseLogLevel("warning"), LogLevel::kWarn);
  EXPECT_EQ(ParseLogLevel("0"), LogLevel::kError);
  EXPECT_THROW(ParseLogLevel("loud"), Error);
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(FormatDuration(12.34), "12.3s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
  EXPECT_EQ(FormatDuration(-1), "0.0s");
}

TEST(Progress, CountsWhatIsDone) {
  const LogLevel saved = GetLogLevel();
  SetLogLevel(LogLevel::kError);  // keep the test output clean
  Progress progress("layers", 4, "layers");
  progress.Advance(3, "status");
  EXPECT_EQ(progress.done(), 3);
  progress.Finish();
  SetLogLevel(saved);
}

TEST(AtomicFile, CommitRenamesIntoPlace) {
  const fs::path dir = ScratchDir("commit");
  const std::string path = (dir / "out.bin").string();
  {
    AtomicFile file(path);
    file.Write("abc");
    file.WriteZeros(5);
    EXPECT_EQ(file.bytes_written(), 8u);
    EXPECT_FALSE(fs::exists(path)) << "nothing appears under the final name before Commit";
    file.Commit();
  }
  EXPECT_EQ(fs::file_size(path), 8u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 1);
  fs::remove_all(dir);
}

TEST(AtomicFile, AbandonedWriteLeavesNothing) {
  const fs::path dir = ScratchDir("abandon");
  const std::string path = (dir / "out.bin").string();
  {
    std::ofstream(path) << "old contents";
    AtomicFile file(path);
    file.Write("partial");
  }
  std::ifstream in(path);
  std::string contents;
  std::getline(in, contents);
  EXPECT_EQ(contents, "old contents") << "an abandoned write must not touch the existing file";
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 1) << "temporary file left";
  fs::remove_all(dir);
}

TEST(AtomicFile, UnwritableFolderIsAnError) {
  try {
    AtomicFile file("/nonexistent-folder/out.bin");
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent-folder/out.bin"), std::string::npos);
  }
}

TEST(MappedFile, MapsContentsAndEmptyFiles) {
  const fs::path dir = ScratchDir("map");
  const std::string path = (dir / "data").string();
  WriteFileAtomically(path, "hello");
  const MappedFile mapped = MappedFile::Open(path);
  ASSERT_EQ(mapped.size(), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(mapped.data()), 5), "hello");
  WriteFileAtomically(path + ".empty", "");
  EXPECT_EQ(MappedFile::Open(path + ".empty").size(), 0u);
  EXPECT_THROW(MappedFile::Open((dir / "missing").string()), Error);
  EXPECT_THROW(MappedFile::Open(dir.string()), Error) << "a folder is not a file";
  fs::remove_all(dir);
}

TEST(TensorInfo, ElementCountsAndLayouts) {
  EXPECT_EQ(CheckedElementCount({}, "x"), 1);
  EXPECT_EQ(CheckedElementCount({3, 0, 5}, "x"), 0);
  EXPECT_EQ(CheckedElementCount({2, 3, 4}, "x"), 24);
  EXPECT_THROW(CheckedElementCount({1LL << 32, 1LL << 32}, "x"), Error);
  EXPECT_THROW(CheckedElementCount({-1, 2}, "x"), Error);
  const Layout conv = LayoutForShape(QuantType::kF32, {64, 3, 3, 3});
  EXPECT_EQ(conv.rows, 64);  // output channels
  EXPECT_EQ(conv.cols, 27);
  const Layout vector = LayoutForShape(QuantType::kF32, {10});
  EXPECT_EQ(vector.rows, 1);
  EXPECT_EQ(vector.cols, 10);
  EXPECT_EQ(ShapeString({2, 3}), "[2, 3]");
}

}  // namespace
}  // namespace atq
