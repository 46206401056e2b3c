// `dsa bench`: user-facing benchmarks, printed as llama-bench style markdown tables or, with
// --json, JSON records. Progress goes to stderr only on a terminal.
//   dsa bench -m DIR      the whole model: prompt processing (pp) and generation (tg) tokens/s at
//                         several cache depths, sparse vs dense attention (src/perf/model_bench.h),
//                         optionally plotted as cost per token against position (--plot)
//   dsa bench attention   one layer's attention per token (decode and prefill) at several cache
//                         depths for dense MLA and DSA (src/perf/attention_bench.h), with the
//                         machine's measured peaks
//   dsa bench train       optimizer steps (forward, backward, AdamW) on a random batch: step time,
//                         tokens/s and GFLOP/s against the fp32 FMA peak (src/perf/train_bench.h),
//                         with --torch the PyTorch eager baseline on the same model in the same run
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "core/version.h"
#include "flag_values.h"
#include "model/forward.h"
#include "model/tensor_layout.h"
#include "ops/gemm/sgemm.h"
#include "perf/attention_bench.h"
#include "perf/machine_peaks.h"
#include "perf/model_bench.h"
#include "perf/svg_plot.h"
#include "perf/train_bench.h"
#include "train/adamw.h"
#include "train/optimizer_step.h"

namespace dsa::cli {
namespace {

using nlohmann::json;

const std::vector<int64_t> kDefaultDepths = {1024, 4096, 16384, 65536, 131072};
const std::vector<int64_t> kQuickDepths = {1024, 4096, 16384};

std::vector<int64_t> parse_depths(const std::string& text, const std::string& flag,
                                  int64_t minimum) {
  std::vector<int64_t> depths;
  for (const std::string& item : split_commas(text)) {
    depths.push_back(parse_int_flag(item, flag, minimum));
  }
  return depths;
}

int parse_threads(const std::string& text) {
  return text.empty() ? ThreadPool::hardware_threads()
                      : int(std::min<int64_t>(parse_int_flag(text, "--threads", 1), 4096));
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
      const double stage_seconds = stage.seconds.median;
      s["gflops"] = stage.flops / stage_seconds * 1e-9;
      s["gbps"] = stage.bytes / stage_seconds * 1e-9;
      s["pct_peak_flops"] = percent(stage.flops / stage_seconds, peaks.fp32_flops_per_second);
      s["pct_bandwidth"] = percent(stage.bytes / stage_seconds, peaks.read_bytes_per_second);
      if (peaks.bf16_dot_flops_per_second > 0) {
        s["pct_peak_bf16_dot"] =
            percent(stage.flops / stage_seconds, peaks.bf16_dot_flops_per_second);
      }
      stages[stage.name] = s;
    }
    record["stages"] = stages;
  }
  return record;
}

// Where the indexer stands against the machine's two limits: the time its bytes take at the
// measured read bandwidth, and the time its multiply-adds take at the fastest dot-product rate
// it can use (vdpbf16ps where present, else fp32 FMA). The larger bound is the one that binds.
// Decode only: in prefill the rows of a chunk share each key read, so bytes are not traffic.
void print_indexer_roofline(const std::vector<AttentionResult>& results,
                            const MachinePeaks& peaks) {
  const bool bf16 = peaks.bf16_dot_flops_per_second > 0;
  const double flop_peak = bf16 ? peaks.bf16_dot_flops_per_second : peaks.fp32_flops_per_second;
  bool header = false;
  for (const AttentionResult& r : results) {
    if (r.phase != BenchPhase::kDecode || r.mode != "dsa" || r.stages.empty() ||
        r.stages[0].name != "indexer") {
      continue;
    }
    const StageResult& indexer = r.stages[0];
    const double seconds = indexer.seconds.median, tokens = double(r.tokens);
    if (!header) {
      fmt::print("\nindexer roofline (decode, per token; compute bound at the {} peak):\n",
                 bf16 ? "bf16 dot" : "fp32 FMA");
      header = true;
    }
    fmt::print(
        "  depth {}: {} ms, {:.0f}% of the compute peak (bound {} ms), {:.0f}% of bandwidth "
        "(bound {} ms)\n",
        r.depth, ms(seconds / tokens), percent(indexer.flops / seconds, flop_peak),
        ms(indexer.flops / flop_peak / tokens),
        percent(indexer.bytes / seconds, peaks.read_bytes_per_second),
        ms(indexer.bytes / peaks.read_bytes_per_second / tokens));
  }
}

void print_table(const std::vector<AttentionResult>& results, const MachinePeaks& peaks,
                 int threads) {
  fmt::print("machine: {}, {} threads, SIMD target {}\n", cpu_model_name(), threads,
             simd_target_name());
  fmt::print("measured peaks: read bandwidth {:.1f} GB/s, fp32 FMA {:.1f} GFLOP/s",
             peaks.read_bytes_per_second * 1e-9, peaks.fp32_flops_per_second * 1e-9);
  if (peaks.bf16_dot_flops_per_second > 0) {
    fmt::print(", bf16 dot (vdpbf16ps) {:.1f} GFLOP/s", peaks.bf16_dot_flops_per_second * 1e-9);
  }
  fmt::print("\n\n");
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
      "medians; % peak FLOP is against the fp32 FMA peak.\n");
  print_indexer_roofline(results, peaks);
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
                                         : parse_depths(options.depths, "--depths", 1);
  if (!options.runs.empty()) {
    config.runs = int(std::min<int64_t>(parse_int_flag(options.runs, "--runs", 1), 1000));
  } else if (options.quick) {
    config.runs = 3;
  }
  if (!options.chunk.empty()) config.chunk = parse_int_flag(options.chunk, "--chunk", 1);
  if (options.mode != "decode" && options.mode != "prefill" && options.mode != "both") {
    fail("--mode: '{}' is not one of decode, prefill, both", options.mode);
  }
  config.decode = options.mode != "prefill";
  config.prefill = options.mode != "decode";
  const int threads = parse_threads(options.threads);
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

// ---- dsa bench -m DIR ---------------------------------------------------------------------------

struct BenchModelOptions {
  std::string model_dir;
  std::string depths = "0,1024,4096";
  std::string n_prompt = "512", n_gen = "128", runs = "3", threads;
  std::string attention = "sparse,dense";
  std::string plot;
  bool synthetic = false;
  bool json = false;
};

ModelBenchConfig model_bench_config(const BenchModelOptions& o) {
  ModelBenchConfig config;
  if (o.depths.empty()) fail("-d: no depths given");
  config.depths = parse_depths(o.depths, "-d", 0);
  config.n_prompt = parse_int_flag(o.n_prompt, "-p", 0);
  config.n_gen = parse_int_flag(o.n_gen, "-n", 0);
  config.runs = int(std::min<int64_t>(parse_int_flag(o.runs, "-r", 1), 1000));
  config.modes = parse_attention_modes(o.attention, "--attention");
  config.synthetic_cache = o.synthetic;
  return config;
}

// What the tables and records say about the run besides the timings.
struct BenchContext {
  std::string model;   // the model folder's name
  int64_t params = 0;  // main-model parameters (MTP layers excluded: they do not run)
  int threads = 0;
  bool synthetic = false;
  std::string cpu;
  uint64_t peak_rss = 0;
  double load_average = -1;
};

std::string format_params(int64_t params) {
  return params >= 1'000'000'000 ? fmt::format("{:.2f} B", double(params) * 1e-9)
                                 : fmt::format("{:.2f} M", double(params) * 1e-6);
}

json model_result_json(const ModelBenchResult& r, const BenchContext& ctx) {
  const TimingStats rate = r.tokens_per_second(), per_token = r.seconds_per_token();
  return {{"model", ctx.model},
          {"n_params", ctx.params},
          {"mode", attention_mode_name(r.mode)},
          {"depth", r.depth},
          {"test", model_bench_test_name(r.test)},
          {"n_tokens", r.n_tokens},
          {"runs", rate.runs},
          {"tokens_per_s", rate.median},
          {"tokens_per_s_min", rate.min},
          {"tokens_per_s_max", rate.max},
          {"ms_per_token", per_token.median * 1e3},
          {"ms_per_token_min", per_token.min * 1e3},
          {"ms_per_token_max", per_token.max * 1e3},
          {"threads", ctx.threads},
          {"synthetic", ctx.synthetic},
          {"cpu", ctx.cpu},
          {"dsa_version", std::string(kVersion)},
          {"peak_rss_bytes", ctx.peak_rss},
          {"load_average_1m", ctx.load_average}};
}

void print_model_table(const std::vector<ModelBenchResult>& results, const BenchContext& ctx) {
  fmt::print("dsa {}, {} ({} threads)\n", kVersion, ctx.cpu, ctx.threads);
  fmt::print("depth reached by {}\n",
             ctx.synthetic ? "a synthetic cache (random valid entries, no model compute)"
                           : "real prefill");
  fmt::print("peak RSS {}, load average (1 min) {:.2f}\n\n", format_bytes(ctx.peak_rss),
             ctx.load_average);
  fmt::print("| model | params | threads | mode | test | t/s | ms/token |\n");
  fmt::print("|---|---:|---:|---|---:|---:|---:|\n");
  for (const ModelBenchResult& r : results) {
    const TimingStats rate = r.tokens_per_second(), t = r.seconds_per_token();
    fmt::print("| {} | {} | {} | {} | {} | {:.2f} ± {:.2f} | {} ± {} |\n", ctx.model,
               format_params(ctx.params), ctx.threads, attention_mode_name(r.mode), r.test_label(),
               rate.median, rate.spread(), ms(t.median), ms(t.spread()));
  }
  fmt::print("\nmedian ± half the min-max range over {} runs, each after one warm-up run.\n",
             results.empty() ? 0 : results.front().run_seconds.size());
  // Sparse attention's speedup over dense per test and depth (median tokens/s).
  for (ModelBenchTest test : {ModelBenchTest::kPrompt, ModelBenchTest::kGenerate}) {
    std::map<int64_t, double> dense, sparse;
    for (const ModelBenchResult& r : results) {
      if (r.test != test) continue;
      if (r.mode == AttentionMode::kDense) dense[r.depth] = r.tokens_per_second().median;
      if (r.mode == AttentionMode::kSparse) sparse[r.depth] = r.tokens_per_second().median;
    }
    std::string line;
    for (const auto& [depth, rate] : sparse) {
      if (!dense.contains(depth)) continue;
      line += fmt::format("{}d{}: {:.2f}x", line.empty() ? "" : ", ", depth, rate / dense[depth]);
    }
    if (!line.empty()) {
      fmt::print("{} speedup of sparse over dense: {}\n", model_bench_test_name(test), line);
    }
  }
}

// ms per token against depth: tg (decode) solid, pp (prefill, per prompt token) dashed, one
// color per mode.
LineChart cost_chart(const std::vector<ModelBenchResult>& results, const ModelBenchConfig& config,
                     const BenchContext& ctx) {
  LineChart chart;
  chart.title = fmt::format("decode/prefill cost per token vs position ({}, {} threads{})",
                            ctx.model, ctx.threads, ctx.synthetic ? ", synthetic cache" : "");
  chart.x_label = "position (cache depth before the test, tokens)";
  chart.y_label = "ms per token";
  for (ModelBenchTest test : {ModelBenchTest::kGenerate, ModelBenchTest::kPrompt}) {
    for (AttentionMode mode : config.modes) {
      PlotSeries series;
      series.name = fmt::format("{} {}", attention_mode_name(mode),
                                test == ModelBenchTest::kGenerate ? "decode (tg)" : "prefill (pp)");
      series.color = mode == AttentionMode::kSparse  ? "#1f77b4"
                     : mode == AttentionMode::kDense ? "#d62728"
                                                     : "#2ca02c";
      series.dashed = test == ModelBenchTest::kPrompt;
      for (const ModelBenchResult& r : results) {
        if (r.mode != mode || r.test != test) continue;
        series.x.push_back(double(r.depth));
        series.y.push_back(r.seconds_per_token().median * 1e3);
      }
      if (!series.x.empty()) chart.series.push_back(std::move(series));
    }
  }
  return chart;
}

void run_bench_model(const BenchModelOptions& o) {
  const ModelBenchConfig config = model_bench_config(o);
  const int threads = parse_threads(o.threads);
  if (!o.plot.empty()) {
    const std::filesystem::path parent = std::filesystem::absolute(o.plot).parent_path();
    if (!std::filesystem::is_directory(parent)) {
      fail("--plot: folder {} does not exist", parent.string());
    }
  }
  ThreadPool pool(threads);
  std::unique_ptr<Model> model;
  try {
    model = Model::load(o.model_dir, pool);
  } catch (const Error& e) {
    fail("bench: cannot load the model in {}: {}", o.model_dir, e.what());
  }
  validate(config, model->config());

  std::unique_ptr<ProgressBar> bar;
  const FillProgress progress = [&](const std::string& label, int64_t done, int64_t total) {
    if (done == 0)
      bar = std::make_unique<ProgressBar>(label, uint64_t(total), ProgressUnit::kItems);
    bar->update(uint64_t(done));
    if (done == total) bar.reset();  // the destructor draws the last frame
  };
  const std::vector<ModelBenchResult> results = run_model_bench(*model, config, pool, progress);

  BenchContext ctx;
  ctx.model = std::filesystem::absolute(o.model_dir).lexically_normal().filename().string();
  if (ctx.model.empty()) {
    ctx.model = std::filesystem::absolute(o.model_dir).lexically_normal().parent_path().filename();
  }
  ctx.params = count_parameters(model->config()).main_model;
  ctx.threads = pool.size();
  ctx.synthetic = config.synthetic_cache;
  ctx.cpu = cpu_model_name();
  ctx.peak_rss = peak_rss_bytes();
  ctx.load_average = load_average_1m();
  if (!o.plot.empty()) write_svg(o.plot, cost_chart(results, config, ctx));
  if (o.json) {
    json records = json::array();
    for (const ModelBenchResult& r : results) records.push_back(model_result_json(r, ctx));
    fmt::print("{}\n", records.dump(2));
  } else {
    print_model_table(results, ctx);
  }
}

// ---- dsa bench train ----------------------------------------------------------------------------

struct BenchTrainOptions {
  std::string init;
  std::string stage = "dense";
  std::string seq = "512", batch = "4", runs = "5", warmup = "1", rounds = "1", threads;
  std::string seed = "1";
  std::string peak;  // GFLOP/s; empty: measured
  std::string source, python = "/usr/bin/python3";
  std::vector<std::string> torch_env;
  bool torch = false;
  bool json = false;
  bool no_breakdown = false;
  bool recompute = false;
  std::string precision = "fp32";
};

// Removes a folder when it goes out of scope (the PyTorch baseline's inputs).
struct TempFolder {
  std::filesystem::path path;
  ~TempFolder() {
    std::error_code ignored;
    if (!path.empty()) std::filesystem::remove_all(path, ignored);
  }
};

void append(std::vector<double>& to, const std::vector<double>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

void run_bench_train(const BenchTrainOptions& o) {
  TrainBenchConfig config;
  config.graph = train_bench_stage(o.stage);
  config.graph.recompute_layers = o.recompute;
  config.graph.matmul = parse_matmul_precision(o.precision, "--precision");
  config.seq = parse_int_flag(o.seq, "--seq", 2);
  config.batch = parse_int_flag(o.batch, "--batch", 1);
  config.runs = int(std::min<int64_t>(parse_int_flag(o.runs, "--runs", 1), 1000));
  config.warmup = int(std::min<int64_t>(parse_int_flag(o.warmup, "--warmup", 0), 1000));
  config.seed = uint64_t(parse_int_flag(o.seed, "--seed", 0));
  config.breakdown = !o.no_breakdown;
  const int rounds = int(std::min<int64_t>(parse_int_flag(o.rounds, "--rounds", 1), 100));
  const int threads = parse_threads(o.threads);
  const std::optional<std::filesystem::path> tree = find_source_tree(o.source);
  if (!o.torch_env.empty() && !o.torch) fail("--torch-env: only with --torch");
  for (const std::string& setting : o.torch_env) {
    if (setting.find('=') == 0 || setting.find('=') == std::string::npos) {
      fail("--torch-env: '{}' is not NAME=VALUE", setting);
    }
  }
  if (o.torch && !tree) {
    fail(
        "--torch: cannot find scripts/bench_train_torch.py above this executable; give the "
        "source tree with --source");
  }

  ThreadPool pool(threads);
  ParameterBuffer params = [&] {
    try {
      return train_bench_parameters(o.init, config.seed, pool);
    } catch (const Error& e) {
      fail("bench train: cannot use --init {}: {}", o.init, e.what());
    }
  }();
  const ModelConfig& model = params.layout().config();
  validate(config, model);

  // The baseline's inputs are written before the engine's steps change the weights, so both
  // start from the same model and see the same batch.
  TempFolder torch_dir;
  TorchBaselineConfig torch;
  if (o.torch) {
    torch_dir.path = std::filesystem::temp_directory_path() /
                     fmt::format("dsa-bench-train-{}", uint64_t(::getpid()));
    write_bench_model(params, torch_dir.path / "model");
    write_bench_tokens(train_bench_tokens(model, config.batch, config.seq, config.seed),
                       config.batch, config.seq, torch_dir.path / "tokens.json");
    torch = {.python = o.python,
             .script = *tree / "scripts" / "bench_train_torch.py",
             .model_dir = torch_dir.path / "model",
             .tokens_file = torch_dir.path / "tokens.json",
             .stage = o.stage,
             .precision = matmul_precision_name(config.graph.matmul),
             .batch = config.batch,
             .seq = config.seq,
             .threads = threads,
             .warmup = config.warmup,
             .runs = config.runs,
             .env = o.torch_env};
  }

  // The optimizer step of `dsa train --stage`: constant learning rate, clipping at 1, the
  // router-bias update; AdamW over every parameter (the indexers only in the warm-up stage).
  ParameterBuffer grads(params.shared_layout());
  const bool indexer_only = !config.graph.lm_loss;
  train::AdamW optimizer(params.shared_layout(), train::AdamWConfig{}, [&](const TrainTensor& t) {
    return indexer_only ? t.spec.module == Module::kIndexer : true;
  });
  const train::StepSettings settings{.graph = config.graph,
                                     .schedule = {.lr = 3e-4, .min_lr = 3e-4, .steps = 1},
                                     .clip = 1.0,
                                     .bias_update_rate = 1e-3};
  int64_t steps_taken = 0;
  const OptimizerStepFn step = [&](const TrainBatch& batch, int64_t) {
    const train::StepStats s = train::run_optimizer_step(params, grads, optimizer,
                                                         std::span(&batch, 1), settings, 0, pool);
    ++steps_taken;
    return config.graph.lm_loss ? s.loss : s.indexer_loss;
  };

  MachinePeaks peaks;
  if (o.peak.empty()) {
    peaks = measure_machine_peaks(pool);
  } else {
    peaks.fp32_flops_per_second = 1e9 * double(parse_int_flag(o.peak, "--peak-gflops", 1));
  }
  // Rounds alternate the engines (dsa, then torch), so slow phases of a shared machine hit both.
  TrainBenchReport report;
  for (int round = 0; round < rounds; ++round) {
    TrainBenchConfig c = config;
    c.breakdown = config.breakdown && round == 0;
    const TrainBenchResult r = run_train_bench(params, c, step, pool);
    if (round == 0) {
      report.dsa = r;
    } else {
      append(report.dsa.step_seconds, r.step_seconds);
      append(report.dsa.step_cpu_seconds, r.step_cpu_seconds);
    }
    if (o.torch) {
      const TorchBaselineResult t = run_torch_baseline(torch);
      if (round == 0) {
        report.torch = t;
      } else {
        append(report.torch->step_seconds, t.step_seconds);
      }
    }
  }
  report.model = o.init;
  report.architecture = std::string(architecture_name(model.architecture));
  report.params = count_parameters(model).main_model;
  report.stage = o.stage;
  report.recompute = o.recompute;
  report.peak_rss = peak_rss_bytes();
  report.sgemm = config.graph.matmul == MatmulPrecision::kBf16 ? sgemm_bf16_implementation()
                                                               : sgemm_implementation();
  report.precision = matmul_precision_name(config.graph.matmul);
  report.threads = pool.size();
  report.cpu = cpu_model_name();
  report.simd_target = simd_target_name();
  report.version = std::string(kVersion);
  report.commit = tree ? source_commit(*tree) : "unknown";
  report.load_average = load_average_1m();
  report.peaks = peaks;
  report.peak_given = !o.peak.empty();
  report.rounds = rounds;
  report.torch_env = o.torch_env;
  if (o.json) {
    fmt::print("{}\n", train_report_json(report).dump(2));
  } else {
    fmt::print("{}", format_train_report(report));
  }
}

CLI::App* add_bench_train(CLI::App* bench, const std::shared_ptr<BenchModelOptions>& model) {
  auto o = std::make_shared<BenchTrainOptions>();
  auto* cmd = bench->add_subcommand(
      "train", "Training speed: optimizer steps on a random batch, tokens/s and GFLOP/s");
  cmd->add_option("--init", o->init,
                  "A preset (dsa init-model --list-presets), a config.json (random weights) or a "
                  "model folder")
      ->required();
  cmd->add_option("--stage", o->stage, "dense (default), warmup or sparse, as `dsa train`");
  cmd->add_option("--seq", o->seq, "Tokens per sequence (default 512)");
  cmd->add_option("--batch", o->batch, "Sequences per step (default 4)");
  cmd->add_option("--runs", o->runs, "Timed steps per round after the warm-up (default 5)");
  cmd->add_option("--warmup", o->warmup, "Untimed steps per round first (default 1)");
  cmd->add_option("--rounds", o->rounds,
                  "Rounds of dsa then torch, their timed steps pooled (default 1)");
  cmd->add_option("--seed", o->seed, "Seed of the random weights and the batch (default 1)");
  cmd->add_option("-t,--threads", o->threads, "Threads (default: all hardware threads)");
  cmd->add_flag("--torch", o->torch,
                "Also run the PyTorch eager baseline (scripts/bench_train_torch.py) on the same "
                "weights, batch and threads, and print the ratio");
  cmd->add_option("--source", o->source,
                  "Source tree holding scripts/bench_train_torch.py (default: found above the "
                  "dsa executable)");
  cmd->add_option("--torch-env", o->torch_env,
                  "NAME=VALUE for the baseline's environment (repeatable), e.g. "
                  "OMP_WAIT_POLICY=PASSIVE");
  cmd->add_option("--python", o->python,
                  "Python with torch for --torch (default /usr/bin/python3)");
  cmd->add_option("--peak-gflops", o->peak,
                  "The fp32 FMA peak to report against, in GFLOP/s (default: measured, which "
                  "takes a few seconds)");
  cmd->add_flag("--no-breakdown", o->no_breakdown,
                "Skip the forward / backward / matrix-product breakdown");
  cmd->add_flag("--recompute", o->recompute,
                "Recompute each layer's forward in the backward, as `dsa train --recompute`");
  cmd->add_option("--precision", o->precision,
                  "The matrix products: fp32, or bf16 (operands rounded to bf16, fp32 sums), as "
                  "`dsa train --precision`")
      ->default_str("fp32");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of the report");
  cmd->callback([o, model] {
    if (!model->model_dir.empty()) {
      fail("bench: -m is for the model benchmark; `bench train` takes --init");
    }
    run_bench_train(*o);
  });
  return cmd;
}

void add_bench_model_options(CLI::App* bench, const std::shared_ptr<BenchModelOptions>& o) {
  bench->add_option("-m,--model", o->model_dir, "Model folder: runs the whole-model benchmark");
  bench->add_option("-d,--n-depth", o->depths,
                    "Comma-separated cache depths before each test (default 0,1024,4096)");
  bench->add_option("-p,--n-prompt", o->n_prompt,
                    "Prompt tokens per pp test (default 512; 0: none)");
  bench->add_option("-n,--n-gen", o->n_gen, "Decoded tokens per tg test (default 128; 0: none)");
  bench->add_option("-r,--repetitions", o->runs,
                    "Timed runs per test after one warm-up (default 3)");
  bench->add_option("--attention", o->attention,
                    "Comma-separated attention modes: sparse, dense, auto (default sparse,dense)");
  bench->add_option("-t,--threads", o->threads, "Threads (default: all hardware threads)");
  bench->add_flag("--synthetic-cache", o->synthetic,
                  "Reach each depth with random valid cache entries instead of real prefill");
  bench->add_flag("--json", o->json, "Print a JSON array of records instead of the table");
  bench->add_option("--plot", o->plot, "Write ms/token against depth as an SVG chart to FILE");
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* bench = app.add_subcommand(
      "bench", "Benchmarks: the whole model with -m DIR (llama-bench style), or a subcommand");
  bench->require_subcommand(0, 1);
  auto model_options = std::make_shared<BenchModelOptions>();
  add_bench_model_options(bench, model_options);
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
  // CLI11 runs the subcommand's callback before its parent's, so the check is made here.
  cmd->callback([options, model_options] {
    if (!model_options->model_dir.empty()) {
      fail("bench: -m is for the model benchmark; `bench attention` takes no model");
    }
    run_bench_attention(*options);
  });
  CLI::App* train_cmd = add_bench_train(bench, model_options);
  bench->callback([bench, cmd, train_cmd, model_options] {
    if (bench->got_subcommand(cmd) || bench->got_subcommand(train_cmd)) return;
    if (model_options->model_dir.empty()) {
      fail("bench: give -m DIR for the model benchmark, or a subcommand (attention)");
    }
    run_bench_model(*model_options);
  });
}

}  // namespace dsa::cli
