// `dsa demo`: the README's first command. The built-in model (trained by this engine) writes a
// few lines, then the demo shows how the cost of one decoded token grows with its position for
// sparse (DSA) and dense attention on a generated model of DeepSeek-V3.2's layout (long context:
// the built-in model only reaches 4K), in a few minutes on two cores, and says where to go next.
//
//   dsa demo [--model DIR] [--quick] [-t THREADS] [--plot FILE.svg]
//
// The model: DIR if it holds a config.json; otherwise the demo model is generated into DIR
// (default models/demo, or models/demo-quick with --quick) with init-model's generator, seed 0,
// and reused by later runs while its config.json matches and it loads. The measurement is
// `dsa bench -m`'s (src/perf/model_bench.h): per position, a synthetic cache up to it, then decode
// steps timed for each mode. The rows print as they are measured, then an ASCII chart, and an SVG
// of the same chart is written (by default next to a generated model).
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/safetensors_writer.h"
#include "core/thread_pool.h"
#include "demo_sample.h"
#include "flag_values.h"
#include "model/config.h"
#include "model/forward.h"
#include "model/init_weights.h"
#include "model/presets.h"
#include "model/tensor_layout.h"
#include "perf/ascii_chart.h"
#include "perf/machine_peaks.h"
#include "perf/model_bench.h"
#include "perf/svg_plot.h"

namespace dsa::cli {
namespace fs = std::filesystem;
namespace {

struct DemoOptions {
  std::string model_dir;
  bool quick = false;
  std::string threads;
  std::string plot;
};

// How much is measured: decode steps per position and timed runs (after one warm-up).
struct DemoPlan {
  int64_t n_gen = 0;
  int runs = 0;
};

DemoPlan demo_plan(bool quick) { return quick ? DemoPlan{4, 2} : DemoPlan{16, 5}; }

// The generated default: DeepSeek-V3.2's layout with V3.2's latent width (kv_lora_rank 512, so a
// cache entry is V3.2's 656 bytes) and 16 query heads, so that attention is a real share of a
// token's cost at depth, as in the full-size model, and index_topk far below the positions reached.
// No MTP layer (decoding does not run it).
//   full   the `small` preset's other dimensions (8 layers, hidden 512, 16 routed experts,
//          DeepSeek's vocabulary), index_topk 256, positions to 32K (YaRN factor 8 over 4K)
//   quick  the `tiny` preset's (2 layers, hidden 256, vocabulary 1024), index_topk 64, positions
//          to 8K (factor 4 over 2K): generated and measured in seconds
ModelConfig demo_model_config(bool quick) {
  ModelConfig c = find_model_preset(quick ? "tiny" : "small").config;
  c.num_nextn_predict_layers = 0;
  c.kv_lora_rank = 512;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 16;
  c.index_topk = quick ? 64 : 256;
  c.max_position_embeddings = quick ? 8192 : 32768;
  c.rope_scaling = RopeScaling{.factor = quick ? 4.0 : 8.0,
                               .original_max_position_embeddings = quick ? 2048 : 4096};
  return c;
}

fs::path default_demo_dir(bool quick) { return quick ? "models/demo-quick" : "models/demo"; }

bool same_config(const fs::path& dir, const ModelConfig& expected) {
  try {
    return model_config_to_json(load_model_config(dir / "config.json")) ==
           model_config_to_json(expected);
  } catch (const Error&) {
    return false;
  }
}

// Writes the demo checkpoint into `dir`: stale checkpoint files first go, config.json comes last,
// so an interrupted write never looks like a complete model.
void generate_demo_model(const fs::path& dir, const ModelConfig& config, ThreadPool& pool) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) fail("demo: cannot create {}: {}", dir.string(), error.message());
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.json" || (name.starts_with("model") && name.ends_with(".safetensors")) ||
        name == "model.safetensors.index.json") {
      fs::remove(entry.path(), error);
      if (error) fail("demo: cannot remove {}: {}", entry.path().string(), error.message());
    }
  }
  const std::vector<ParameterSpec> parameters = model_parameters(config);
  uint64_t total_bytes = 0;
  for (const CheckpointTensor& tensor : checkpoint_tensors(parameters)) {
    total_bytes += tensor.nbytes();
  }
  fmt::print("generating the demo model into {} ({}, {} parameters, seed 0; once, reused later)\n",
             dir.string(), format_bytes(total_bytes),
             format_count(uint64_t(count_parameters(config).total())));
  std::fflush(stdout);
  ProgressBar bar("generating", total_bytes);
  write_initial_checkpoint(dir, parameters, /*seed=*/0, std::numeric_limits<uint64_t>::max(), pool,
                           [&](uint64_t done) { bar.update(done); });
  bar.finish();
  write_file_atomically(dir / "config.json", model_config_to_json(config).dump(2) + "\n");
}

struct LoadedModel {
  fs::path dir;
  std::unique_ptr<Model> model;
  bool generated_here = false;  // the demo's own model (generated now or earlier)
};

LoadedModel load_demo_model(const DemoOptions& o, ThreadPool& pool) {
  LoadedModel loaded;
  loaded.dir = o.model_dir.empty() ? default_demo_dir(o.quick) : fs::path(o.model_dir);
  const ModelConfig demo = demo_model_config(o.quick);
  const bool has_config = fs::exists(loaded.dir / "config.json");
  if (!o.model_dir.empty() && has_config) {
    // The user's own model, used as it is.
    try {
      loaded.model = Model::load(loaded.dir, pool);
    } catch (const Error& e) {
      fail("demo: cannot load the model in {}: {}", loaded.dir.string(), e.what());
    }
    loaded.generated_here = same_config(loaded.dir, demo);
    if (loaded.generated_here) {
      fmt::print("using the demo model in {} (generated earlier)\n", loaded.dir.string());
    }
    return loaded;
  }
  if (!o.model_dir.empty() && fs::is_directory(loaded.dir)) {
    for (const auto& entry : fs::directory_iterator(loaded.dir)) {
      if (entry.path().extension() == ".safetensors") {
        fail(
            "demo: {} holds .safetensors files but no config.json; give a model folder or a new "
            "one",
            loaded.dir.string());
      }
    }
  }
  loaded.generated_here = true;
  if (has_config && same_config(loaded.dir, demo)) {
    try {
      loaded.model = Model::load(loaded.dir, pool);
      fmt::print("using the demo model in {} (generated earlier)\n", loaded.dir.string());
      return loaded;
    } catch (const Error& e) {
      fmt::print("the demo model in {} does not load ({}); generating it again\n",
                 loaded.dir.string(), e.what());
    }
  } else if (has_config) {
    fmt::print("{} holds another model; writing the demo model over it\n", loaded.dir.string());
  } else if (fs::exists(loaded.dir) && !fs::is_directory(loaded.dir)) {
    fail("demo: {} exists and is not a folder", loaded.dir.string());
  }
  generate_demo_model(loaded.dir, demo, pool);
  loaded.model = Model::load(loaded.dir, pool);
  return loaded;
}

// Positions 0, then doublings of index_topk from where 6 points reach the largest position that
// fits (max_position_embeddings - n_gen, rounded down to a multiple of index_topk).
std::vector<int64_t> demo_depths(const ModelConfig& c, int64_t n_gen) {
  const int64_t step = std::max<int64_t>(c.index_topk, 1);
  const int64_t top = (c.max_position_embeddings - n_gen) / step * step;
  if (top < step) {
    fail("demo: the model's max_position_embeddings ({}) leaves no room for a position of {}",
         c.max_position_embeddings, step);
  }
  int64_t depth = step;
  while (depth * 32 < top) depth *= 2;
  std::vector<int64_t> depths = {0};
  for (; depth < top; depth *= 2) depths.push_back(depth);
  depths.push_back(top);
  return depths;
}

struct Row {
  int64_t depth = 0;
  double sparse_ms = 0, dense_ms = 0;
};

// This executable as the user would type it: relative to the working folder when under it.
std::string self_command() {
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (error) return "dsa";
  const fs::path relative = exe.lexically_relative(fs::current_path(error));
  return !error && !relative.empty() && *relative.begin() != ".." ? relative.string()
                                                                  : exe.string();
}

void print_intro(const LoadedModel& m, int threads, const DemoPlan& plan) {
  const ModelConfig& c = m.model->config();
  fmt::print(
      "\nmodel: {} ({}{}): {} layers, hidden {}, {} attention heads, latent {} + RoPE {}, "
      "indexer {} heads x {}, index_topk {}, {} parameters\n",
      m.dir.string(), architecture_name(c.architecture), m.generated_here ? ", random weights" : "",
      c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.kv_lora_rank, c.qk_rope_head_dim,
      c.index_n_heads, c.index_head_dim, c.index_topk,
      format_count(uint64_t(count_parameters(c).main_model)));
  fmt::print("machine: {}, {} threads\n\n", cpu_model_name(), threads);
  fmt::print(
      "sparse = DSA: the lightning indexer scores every earlier token, then attention reads only "
      "the {} best\ndense  = attention reads every earlier token (DeepSeek-V3.1's attention)\n",
      c.index_topk);
  fmt::print(
      "At each position the cache is filled with random valid entries (no model compute), then "
      "{} tokens are\ndecoded; ms/token is the median of {} timed run{} after a warm-up.\n\n",
      plan.n_gen, plan.runs, plan.runs == 1 ? "" : "s");
}

void print_summary(const std::vector<Row>& rows, const ModelConfig& c) {
  const Row &first = rows.front(), &last = rows.back();
  fmt::print(
      "From position {} to {}, dense attention's cost per token grew by {:.2f} ms (it reads every "
      "cached token);\nsparse attention's by {:.2f} ms (its indexer still scores every cached "
      "token, but attention reads\nonly the top {}). At {}: dense / sparse = {:.2f}x.\n",
      first.depth, last.depth, last.dense_ms - first.dense_ms, last.sparse_ms - first.sparse_ms,
      c.index_topk, last.depth, last.dense_ms / last.sparse_ms);
}

void print_next_steps(const LoadedModel& m, const std::string& dsa) {
  const std::string dir = m.dir.string();
  const bool has_tokenizer = fs::exists(m.dir / "tokenizer.json");
  fmt::print("\nWhere to go next:\n");
  const auto step = [](const std::string& command, const std::string& what) {
    fmt::print("  {}\n      {}\n", command, what);
  };
  step(fmt::format("{} bench -m {} -d 0,4096,8192 --synthetic-cache --plot cost.svg", dsa, dir),
       "whole-model speed, prefill (pp) and decode (tg), llama-bench style (docs/model-speed.md)");
  step(fmt::format("{} bench attention", dsa),
       "one layer's attention at DeepSeek-V3.2's real shape, to 128K tokens (docs/benchmarks.md)");
  step(fmt::format("{} logits -m {} --tokens \"0 1 2 3\" -o logits.npy", dsa, dir),
       "the logits of every position, for checking against a reference (docs/model.md)");
  if (has_tokenizer) {
    step(fmt::format("{} run -m {} -p \"Hello\"", dsa, dir),
         "generate text (random weights: expect gibberish; the mechanics are real)");
  } else {
    step(fmt::format("{} run -m DIR -p \"Hello\"", dsa),
         "generate text with a model that has a tokenizer.json (scripts/demo.sh copies "
         "DeepSeek's into models/demo)");
  }
  step(fmt::format("{} run -p \"In the beginning\"", dsa),
       "generate text with the built-in model, trained by this engine (docs/model-card.md)");
  step(fmt::format("{} perplexity -m DIR -f FILE", dsa),
       "perplexity per attention mode, and the KL divergence of sparse from dense "
       "(docs/perplexity.md)");
  fmt::print("  docs: README.md (all commands), docs/architecture.md, docs/model.md\n");
}

void run_demo(const DemoOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const int threads = o.threads.empty()
                          ? ThreadPool::hardware_threads()
                          : int(std::min<int64_t>(parse_int_flag(o.threads, "--threads", 1), 4096));
  if (!o.plot.empty() && !fs::is_directory(fs::absolute(o.plot).parent_path())) {
    fail("--plot: folder {} does not exist", fs::absolute(o.plot).parent_path().string());
  }
  ThreadPool pool(threads);
  fmt::print(
      "dsa demo: the cost of one decoded token as its position grows, sparse (DSA) vs "
      "dense attention\n");
  print_builtin_model_sample(pool);
  const LoadedModel m = load_demo_model(o, pool);
  const ModelConfig& c = m.model->config();
  if (!c.has_indexer()) {
    fail("demo: the model in {} is {}: it has no indexer, so no sparse attention to compare",
         m.dir.string(), architecture_name(c.architecture));
  }
  const DemoPlan plan = demo_plan(o.quick);
  const std::vector<int64_t> depths = demo_depths(c, plan.n_gen);
  print_intro(m, pool.size(), plan);

  fmt::print("| position | sparse ms/token | dense ms/token | dense / sparse |\n");
  fmt::print("|---:|---:|---:|---:|\n");
  std::fflush(stdout);
  std::vector<Row> rows;
  for (int64_t depth : depths) {
    ModelBenchConfig config;
    config.depths = {depth};
    config.n_prompt = 0;
    config.n_gen = plan.n_gen;
    config.runs = plan.runs;
    config.synthetic_cache = true;
    Row row{.depth = depth};
    for (const ModelBenchResult& r : run_model_bench(*m.model, config, pool)) {
      const double ms = r.seconds_per_token().median * 1e3;
      (r.mode == AttentionMode::kSparse ? row.sparse_ms : row.dense_ms) = ms;
    }
    fmt::print("| {} | {:.2f} | {:.2f} | {:.2f}x |\n", depth, row.sparse_ms, row.dense_ms,
               row.dense_ms / row.sparse_ms);
    std::fflush(stdout);
    rows.push_back(row);
  }

  AsciiChart chart{.x_label = "position (tokens already in the cache)",
                   .y_label = "ms per decoded token",
                   .series = {{.name = "dense", .marker = 'D', .x = {}, .y = {}},
                              {.name = "sparse (DSA)", .marker = 'S', .x = {}, .y = {}}}};
  LineChart svg{.title = fmt::format("cost of a decoded token vs position ({}, {} threads)",
                                     m.dir.filename().string(), pool.size()),
                .x_label = "position (tokens already in the cache)",
                .y_label = "ms per decoded token",
                .series = {{.name = "dense", .x = {}, .y = {}, .color = "#d62728"},
                           {.name = "sparse (DSA)", .x = {}, .y = {}, .color = "#1f77b4"}}};
  for (const Row& row : rows) {
    for (int s = 0; s < 2; ++s) {
      const double ms = s == 0 ? row.dense_ms : row.sparse_ms;
      chart.series[size_t(s)].x.push_back(double(row.depth));
      chart.series[size_t(s)].y.push_back(ms);
      svg.series[size_t(s)].x.push_back(double(row.depth));
      svg.series[size_t(s)].y.push_back(ms);
    }
  }
  fmt::print("\n{}\n", render_ascii_chart(chart));
  print_summary(rows, c);
  const fs::path plot = !o.plot.empty()    ? fs::path(o.plot)
                        : m.generated_here ? m.dir / "demo-cost.svg"
                                           : fs::path();
  if (!plot.empty()) {
    write_svg(plot, svg);
    fmt::print("The chart as SVG: {}\n", plot.string());
  }
  print_next_steps(m, self_command());
  fmt::print("\n(demo finished in {})\n",
             format_duration(
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()));
}

}  // namespace

void register_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand(
      "demo", "Cost per token vs position, sparse (DSA) vs dense, on a generated demo model");
  cmd->add_option("--model", o->model_dir,
                  "Model folder: used if it holds config.json, else the demo model is generated "
                  "there (default models/demo, models/demo-quick with --quick)");
  cmd->add_flag("--quick", o->quick, "A tiny model and fewer runs: well under a minute");
  cmd->add_option("-t,--threads", o->threads, "Threads (default: all hardware threads)");
  cmd->add_option("--plot", o->plot,
                  "Write the chart as SVG to FILE (default: demo-cost.svg in the demo model's "
                  "folder)");
  cmd->callback([o] { run_demo(*o); });
}

}  // namespace dsa::cli
