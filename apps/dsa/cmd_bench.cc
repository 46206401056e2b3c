// `dsa bench`: user-facing benchmarks. `dsa bench attention` times one layer's attention per
// token (decode and prefill) at several cache depths for dense MLA and DSA (src/perf/
// attention_bench.h), and prints a llama-bench style markdown table with the machine's measured
// peaks, or JSON records with --json. Progress goes to stderr only on a terminal.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "perf/attention_bench.h"
#include "perf/machine_peaks.h"

namespace dsa::cli {
namespace {

using nlohmann::json;

const std::vector<int64_t> kDefaultDepths = {1024, 4096, 16384, 65536, 131072};
const std::vector<int64_t> kQuickDepths = {1024, 4096, 16384};

// Numeric flags arrive as text so a bad value is a dsa::Error (exit status 1) naming the flag.
int64_t parse_positive(const std::string& text, const std::string& flag) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    fail("{}: '{}' is not an integer", flag, text);
  }
  if (value < 1) fail("{}: {} must be at least 1", flag, value);
  return value;
}

std::vector<int64_t> parse_depths(const std::string& text) {
  std::vector<int64_t> depths;
  size_t pos = 0;
  while (true) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? comma : comma - pos);
    depths.push_back(parse_positive(item, "--depths"));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return depths;
}

struct BenchAttentionOptions {
  std::string depths, threads, runs, chunk;
  std::string mode = "decode";
  bool json = false;
  bool quick = false;
};

double percent(double rate, double peak) { return peak > 0 ? 100.0 * rate / peak : 0.0; }

std::string ms(double seconds) { return fmt::format("{:.3f}", seconds * 1e3); }

json stats_json(const TimingStats& per_token) {
  return {{"ms_per_token", per_token.median * 1e3},
          {"ms_per_token_min", per_token.min * 1e3},
          {"ms_per_token_max", per_token.max * 1e3},
          {"ms_per_token_q1", per_token.q1 * 1e3},
          {"ms_per_token_q3", per_token.q3 * 1e3}};
}

json result_json(const AttentionResult& r, const MachinePeaks& peaks) {
  const double seconds = r.seconds.median;
  json record = stats_json(r.seconds_per_token());
  record["phase"] = phase_name(r.phase);
  record["mode"] = r.mode;
  record["depth"] = r.depth;
  record["tokens"] = r.tokens;
  record["runs"] = r.seconds.runs;
  record["flop_per_token"] = r.flops / double(r.tokens);
  record["bytes_per_token"] = r.bytes / double(r.tokens);
  record["gflops"] = r.flops / seconds * 1e-9;
  record["gbps"] = r.bytes / seconds * 1e-9;
  record["pct_peak_flops"] = percent(r.flops / seconds, peaks.fp32_flops_per_second);
  record["pct_bandwidth"] = percent(r.bytes / seconds, peaks.read_bytes_per_second);
  if (!r.stages.empty()) {
    json stages = json::object();
    for (const StageResult& stage : r.stages) {
      json s = stats_json(scaled(stage.seconds, double(r.tokens)));
      s["gflops"] = stage.flops / stage.seconds.median * 1e-9;
      s["gbps"] = stage.bytes / stage.seconds.median * 1e-9;
      stages[stage.name] = s;
    }
    record["stages"] = stages;
  }
  return record;
}

void print_table(const std::vector<AttentionResult>& results, const MachinePeaks& peaks,
                 int threads) {
  fmt::print("machine: {}, {} threads, SIMD target {}\n", cpu_model_name(), threads,
             simd_target_name());
  fmt::print("measured peaks: read bandwidth {:.1f} GB/s, fp32 FMA {:.1f} GFLOP/s\n\n",
             peaks.read_bytes_per_second * 1e-9, peaks.fp32_flops_per_second * 1e-9);
  fmt::print(
      "| phase | mode | depth | ms/token | indexer | top-k | sparse MLA | GFLOP/s | GB/s "
      "| % peak FLOP | % bandwidth |\n");
  fmt::print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const AttentionResult& r : results) {
    const TimingStats t = r.seconds_per_token();
    std::string stage_cells[3];
    for (size_t i = 0; i < r.stages.size() && i < 3; ++i) {
      stage_cells[i] = ms(r.stages[i].seconds.median / double(r.tokens));
    }
    const double flop_rate = r.flops / r.seconds.median, byte_rate = r.bytes / r.seconds.median;
    fmt::print("| {} | {} | {} | {} ± {} | {} | {} | {} | {:.1f} | {:.2f} | {:.1f} | {:.1f} |\n",
               phase_name(r.phase), r.mode, r.depth, ms(t.median), ms(t.spread()), stage_cells[0],
               stage_cells[1], stage_cells[2], flop_rate * 1e-9, byte_rate * 1e-9,
               percent(flop_rate, peaks.fp32_flops_per_second),
               percent(byte_rate, peaks.read_bytes_per_second));
  }
  fmt::print(
      "\nms/token: median ± half the min-max range over the runs; stage columns are ms/token "
      "medians.\n");
  // DSA's speedup over dense attention on the FP8 cache, per phase and depth (median times).
  for (BenchPhase phase : {BenchPhase::kDecode, BenchPhase::kPrefill}) {
    std::map<int64_t, double> dense, dsa;
    for (const AttentionResult& r : results) {
      if (r.phase != phase) continue;
      if (r.mode == "dense_fp8") dense[r.depth] = r.seconds.median;
      if (r.mode == "dsa") dsa[r.depth] = r.seconds.median;
    }
    if (dsa.empty()) continue;
    std::string line;
    for (const auto& [depth, seconds] : dsa) {
      if (!dense.contains(depth)) continue;
      line += fmt::format("{}{}: {:.2f}x", line.empty() ? "" : ", ", depth, dense[depth] / seconds);
    }
    fmt::print("{} speedup of dsa over dense_fp8: {}\n", phase_name(phase), line);
  }
}

void run_bench_attention(const BenchAttentionOptions& options) {
  AttentionBenchConfig config;
  config.depths = options.depths.empty() ? (options.quick ? kQuickDepths : kDefaultDepths)
                                         : parse_depths(options.depths);
  if (!options.runs.empty()) {
    config.runs = int(std::min<int64_t>(parse_positive(options.runs, "--runs"), 1000));
  } else if (options.quick) {
    config.runs = 3;
  }
  if (!options.chunk.empty()) config.chunk = parse_positive(options.chunk, "--chunk");
  if (options.mode != "decode" && options.mode != "prefill" && options.mode != "both") {
    fail("--mode: '{}' is not one of decode, prefill, both", options.mode);
  }
  config.decode = options.mode != "prefill";
  config.prefill = options.mode != "decode";
  const int threads =
      options.threads.empty()
          ? ThreadPool::hardware_threads()
          : int(std::min<int64_t>(parse_positive(options.threads, "--threads"), 4096));
  validate(config);

  ThreadPool pool(threads);
  const MachinePeaks peaks = measure_machine_peaks(pool);
  ProgressBar bar("bench attention", uint64_t(attention_bench_cases(config)), ProgressUnit::kItems);
  const std::vector<AttentionResult> results =
      run_attention_bench(config, pool, [&](int done, int) { bar.update(uint64_t(done)); });
  bar.finish();

  if (options.json) {
    json records = json::array();
    for (const AttentionResult& r : results) records.push_back(result_json(r, peaks));
    fmt::print("{}\n", records.dump(2));
  } else {
    print_table(results, peaks, pool.size());
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto options = std::make_shared<BenchAttentionOptions>();
  auto* cmd = bench->add_subcommand(
      "attention", "Per-token cost of one layer's attention: dense MLA vs DSA, decode and prefill");
  cmd->add_option("--depths", options->depths,
                  "Comma-separated cache depths (default 1024,4096,16384,65536,131072)");
  cmd->add_option("-t,--threads", options->threads, "Threads (default: all hardware threads)");
  cmd->add_option("--runs", options->runs, "Timed runs per case after one warm-up (default 5)");
  cmd->add_option("--mode", options->mode, "decode, prefill or both (default decode)");
  cmd->add_option("--chunk", options->chunk, "Prefill chunk rows (default 64)");
  cmd->add_flag("--json", options->json, "Print a JSON array of records instead of the table");
  cmd->add_flag("--quick", options->quick, "Fast sweep: depths 1024,4096,16384 and 3 runs");
  cmd->callback([options] { run_bench_attention(*options); });
}

}  // namespace dsa::cli
