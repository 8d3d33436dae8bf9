#include "catch.hpp"
#include "grpokit/cpu_features.hpp"

using namespace grpokit;

TEST_CASE("ScopedCpuThreads sets the calling thread's default team size and restores it", "[threads]") {
  const int before = cpu_max_threads();
  {
    const ScopedCpuThreads one(1);
    CHECK(cpu_max_threads() == 1);
    CHECK(cpu_threads(0) == 1);
    CHECK(cpu_threads(3) == 3);  // an explicit request still wins
  }
  CHECK(cpu_max_threads() == before);
  {
    const ScopedCpuThreads none(0);  // 0 means one thread, never "all"
    CHECK(cpu_max_threads() == 1);
  }
  CHECK(cpu_max_threads() == before);
}
