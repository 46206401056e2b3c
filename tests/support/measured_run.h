// Running the dsa binary directly (no shell) and measuring that process alone: exit code,
// output, wall and CPU time, peak resident memory (wait4). For tests that bound what bad input
// may cost. A run still going after 20 s is killed (SIGALRM), so a regression that blocks fails
// its test instead of hanging it.
#pragma once

#include <string>
#include <vector>

namespace dsa::test {

struct MeasuredRun {
  int exit_code = -1;  // -1: killed by a signal (or not started)
  std::string out, err;
  double wall_seconds = 0;
  double cpu_seconds = 0;    // user + system
  long max_resident_kb = 0;  // of the dsa process alone, not of earlier children
};

MeasuredRun run_dsa_measured(const std::vector<std::string>& args,
                             const std::string& stdin_text = "");

}  // namespace dsa::test
