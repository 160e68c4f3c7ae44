// How a global batch is cut among data-parallel workers: known answers, every row taken once.
#include <gtest/gtest.h>

#include "train/data_parallel.h"
#include "util/error.h"

namespace atq {
namespace {

TEST(WorkerShare, SharesDifferByAtMostOneRowAndCoverTheBatch) {
  EXPECT_EQ(WorkerShare(10, 0, 3), std::make_pair(int64_t{0}, int64_t{3}));
  EXPECT_EQ(WorkerShare(10, 1, 3), std::make_pair(int64_t{3}, int64_t{6}));
  EXPECT_EQ(WorkerShare(10, 2, 3), std::make_pair(int64_t{6}, int64_t{10}));
  EXPECT_EQ(WorkerShare(2, 0, 3), std::make_pair(int64_t{0}, int64_t{0}));  // a worker may get none
  for (int64_t batch : {0, 1, 7, 64, 1001}) {
    for (int world : {1, 2, 3, 8}) {
      int64_t next = 0;
      for (int rank = 0; rank < world; ++rank) {
        const auto [begin, end] = WorkerShare(batch, rank, world);
        EXPECT_EQ(begin, next);
        EXPECT_LE(end - begin, batch / world + 1);
        EXPECT_GE(end - begin, batch / world);
        next = end;
      }
      EXPECT_EQ(next, batch);
    }
  }
  EXPECT_THROW(WorkerShare(10, 3, 3), Error);
}

TEST(WorkerRows, EqualSharesOnlyWhereTheWorkersDivideTheBatch) {
  EXPECT_EQ(WorkerRows(12, 1, 3), std::make_pair(int64_t{4}, int64_t{8}));
  EXPECT_THROW(WorkerRows(10, 0, 3), Error);
}

}  // namespace
}  // namespace atq
