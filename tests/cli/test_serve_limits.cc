// `dsa serve` refuses settings it cannot honour before serving anything: KV caches over
// --kv-memory (with how many requests would fit), a --kv-memory it cannot read, and bad
// --parallel. Each ends with one `dsa: error:` line and exit status 1, and the server does not
// stay up. Requests themselves are tested in tests/server/.
#include <gtest/gtest.h>

#include <string>

#include "support/test_util.h"

namespace dsa {
namespace {

using test::run_dsa;

#if DSA_HAS_EMBEDDED_MODEL
TEST(ServeCli, KvCachesOverTheMemoryLimitAreRefusedWithWhatFits) {
  // dsa-small: 4 layers of 328 B a token, so 4,096 tokens take 5.125 MiB a request.
  const auto r = run_dsa("serve --port 0 -c 4096 --parallel 8 --kv-memory 12MiB -t 1");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("dsa: error: the KV caches of --parallel 8 requests of 4096 tokens (-c) "
                       "need"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("over the --kv-memory limit of 12.00 MiB: 2 such requests fit"),
            std::string::npos)
      << r.err;
}
#endif

TEST(ServeCli, UnreadableKvMemoryIsAnError) {
  for (const char* bad : {"abc", "0", "-1", "8X", "1e30G", "nan"}) {
    const auto r = run_dsa(std::string("serve --port 0 --kv-memory ") + bad);
    EXPECT_EQ(r.exit_code, 1) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("dsa: error: --kv-memory"), std::string::npos) << bad << ": " << r.err;
  }
}

TEST(ServeCli, ParallelMustBePositive) {
  const auto r = run_dsa("serve --port 0 --parallel 0");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--parallel must be at least 1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsa
