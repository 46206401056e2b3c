#include "train/trainer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "model/presets.h"
#include "model/train_graph.h"
#include "model/train_parameters.h"
#include "perf/model_bench.h"
#include "perf/svg_plot.h"
#include "train/checkpoint.h"
#include "train/data_dataset.h"
#include "train/data_sampler.h"
#include "train/data_sha256.h"
#include "train/optimizer_step.h"

namespace dsa::train {
namespace fs = std::filesystem;

Stage parse_stage(const std::string& name) {
  if (name == "dense") return Stage::kDense;
  if (name == "warmup") return Stage::kWarmup;
  if (name == "sparse") return Stage::kSparse;
  fail("--stage must be dense, warmup or sparse, got '{}'", name);
}

std::string stage_name(Stage stage) {
  switch (stage) {
    case Stage::kDense:
      return "dense";
    case Stage::kWarmup:
      return "warmup";
    case Stage::kSparse:
      return "sparse";
  }
  return "?";
}

namespace {

using Clock = std::chrono::steady_clock;

struct InitialModel {
  ParameterBuffer params;
  std::optional<fs::path> tokenizer;  // the init folder's tokenizer.json, if any
};

// --init: a model folder, a config.json, or a preset name.
InitialModel initial_model(const TrainerOptions& o, ThreadPool& pool) {
  const fs::path path(o.init);
  if (fs::is_directory(path)) {
    InitialModel m{.params = load_parameters(path, pool), .tokenizer = std::nullopt};
    if (fs::exists(path / "tokenizer.json")) m.tokenizer = path / "tokenizer.json";
    return m;
  }
  if (o.stage != Stage::kDense) {
    fail("--stage {} continues a trained model: --init must be its folder, got '{}'",
         stage_name(o.stage), o.init);
  }
  ModelConfig config =
      fs::is_regular_file(path) ? load_model_config(path) : find_model_preset(o.init).config;
  // Training runs and saves bf16-valued weights; the FP8 layout comes from `dsa convert`.
  config.quantization.reset();
  validate_model_config(config, o.init);
  return {.params = initial_parameters(config, o.seed, pool), .tokenizer = std::nullopt};
}

TrainStepOptions graph_options(const TrainerOptions& o) {
  const Stage stage = o.stage;
  const float balance_alpha = o.balance_alpha;
  TrainStepOptions g;
  g.recompute_layers = o.recompute;
  g.matmul = o.precision;
  g.attention = stage == Stage::kSparse ? AttentionMode::kSparse : AttentionMode::kDense;
  g.lm_loss = stage != Stage::kWarmup;
  g.indexer_loss = stage != Stage::kDense;
  g.balance_alpha = stage == Stage::kWarmup ? 0.0f : balance_alpha;
  return g;
}

// The flags that decide the numbers; a resume must repeat them. The thread count and
// --recompute are not among them: neither changes a bit of a step (tests/model/
// test_train_graph.cc, *IsTheSameForAnyThreadCount and RecomputationChangesNoBit).
nlohmann::json run_settings(const TrainerOptions& o, const ModelConfig& config) {
  return {{"stage", stage_name(o.stage)},
          {"init", o.init},
          {"data", fs::absolute(o.data).lexically_normal().string()},
          {"steps", o.steps},
          {"batch", o.batch},
          {"seq", o.seq},
          {"grad_accum", o.grad_accum},
          {"lr", o.schedule.lr},
          {"min_lr", o.schedule.min_lr},
          {"warmup", o.schedule.warmup},
          {"weight_decay", o.adamw.weight_decay},
          {"beta1", o.adamw.beta1},
          {"beta2", o.adamw.beta2},
          {"eps", o.adamw.eps},
          {"clip", o.clip},
          {"seed", o.seed},
          {"bias_update_rate", o.bias_update_rate},
          {"balance_alpha", o.balance_alpha},
          {"precision", matmul_precision_name(o.precision)},
          {"model", model_config_to_json(config)}};
}

// A setting as the checkpoint recorded it; for one added after the checkpoint was written, the
// value every run had before it existed.
std::optional<nlohmann::json> saved_setting(const nlohmann::json& saved, const std::string& key) {
  if (saved.contains(key)) return saved.at(key);
  static const nlohmann::json kBeforeTheyExisted = {{"precision", "fp32"}};  // --precision
  if (kBeforeTheyExisted.contains(key)) return kBeforeTheyExisted.at(key);
  return std::nullopt;
}

// `init` is recorded but not compared: a resume takes every weight from the checkpoint, so only
// the model configuration it describes matters (the same config.json under another path is fine).
void check_resume_settings(const nlohmann::json& saved, const nlohmann::json& now,
                           const fs::path& dir) {
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (it.key() == "init") continue;
    const std::optional<nlohmann::json> was_value = saved_setting(saved, it.key());
    if (was_value && *was_value == it.value()) continue;
    const std::string was = was_value ? was_value->dump() : "(absent)";
    if (it.key() == "model") {
      std::string differences;
      const nlohmann::json old_model =
          saved.contains("model") ? saved.at("model") : nlohmann::json();
      for (auto field = it.value().begin(); field != it.value().end(); ++field) {
        const bool same = old_model.is_object() && old_model.contains(field.key()) &&
                          old_model.at(field.key()) == field.value();
        if (same) continue;
        differences +=
            fmt::format("{}{} = {} (the checkpoint has {})", differences.empty() ? "" : ", ",
                        field.key(), field.value().dump(),
                        old_model.is_object() && old_model.contains(field.key())
                            ? old_model.at(field.key()).dump()
                            : "none");
      }
      fail(
          "{}: the model of --init does not match the checkpoint's ({}); resume with the model "
          "it was trained with",
          dir.string(), differences.empty() ? "another configuration" : differences);
    }
    fail(
        "{}: --resume with {} = {}, but the checkpoint was trained with {}; resume with the "
        "same settings",
        dir.string(), it.key(), it.value().dump(), was);
  }
}

// The training status line on a terminal: step, loss, tokens/s, ETA.
class StatusLine {
 public:
  explicit StatusLine(int64_t total) : total_(total), enabled_(isatty(fileno(stderr)) != 0) {}
  void update(int64_t step, double loss, double tokens_per_s, double eta_s) {
    if (!enabled_) return;
    const int width = 24;
    const int filled = int(double(width) * double(step) / double(std::max<int64_t>(total_, 1)));
    fmt::print(stderr, "\rtrain [{}{}] step {}/{}  loss {:.4f}  {:.0f} tok/s  ETA {}   ",
               std::string(static_cast<size_t>(filled), '#'),
               std::string(size_t(width - filled), '.'), step, total_, loss, tokens_per_s,
               format_duration(eta_s));
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_) fmt::print(stderr, "\n");
  }

 private:
  int64_t total_;
  bool enabled_;
};

// The loss curve of the log so far: training loss per step and held-out loss where measured, and
// the indexer's held-out recall where the stage measures it (its values share the axis: both lie
// in about [0, 10]).
void write_plot(const fs::path& log, const fs::path& plot, const std::string& title) {
  std::ifstream in(log);
  PlotSeries train{.name = "training loss", .x = {}, .y = {}, .color = "", .dashed = false};
  PlotSeries heldout{.name = "held-out loss", .x = {}, .y = {}, .color = "", .dashed = true};
  PlotSeries recall{
      .name = "held-out indexer recall", .x = {}, .y = {}, .color = "", .dashed = false};
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step")) continue;
    const double step = j["step"].get<double>();
    if (j.contains("loss")) train.x.push_back(step), train.y.push_back(j["loss"].get<double>());
    if (j.contains("heldout_loss")) {
      heldout.x.push_back(step);
      heldout.y.push_back(j["heldout_loss"].get<double>());
    }
    if (j.contains("heldout_recall")) {
      recall.x.push_back(step);
      recall.y.push_back(j["heldout_recall"].get<double>());
    }
  }
  LineChart chart{.title = title,
                  .x_label = "step",
                  .y_label = recall.x.empty() ? "loss" : "loss (nats) / recall",
                  .series = {}};
  if (!train.x.empty()) chart.series.push_back(train);
  if (!heldout.x.empty()) chart.series.push_back(heldout);
  if (!recall.x.empty()) chart.series.push_back(recall);
  if (chart.series.empty()) return;
  std::error_code ignored;  // write_svg says so if the folder cannot be made
  if (plot.has_parent_path()) fs::create_directories(plot.parent_path(), ignored);
  write_svg(plot, chart);
}

}  // namespace

void run_training(const TrainerOptions& options) {
  TrainerOptions o = options;
  o.schedule.steps = o.steps;
  validate(o.schedule);
  if (o.batch <= 0) fail("--batch must be positive, got {}", o.batch);
  if (o.seq < 2) fail("--seq must be at least 2, got {}", o.seq);
  if (o.grad_accum <= 0) fail("--grad-accum must be positive, got {}", o.grad_accum);
  if (o.save_every < 0) fail("--save-every must be >= 0, got {}", o.save_every);
  if (o.init.empty()) fail("--init is required (a preset, a config.json or a model folder)");
  if (o.output.empty()) fail("-o/--output is required");

  ThreadPool pool(o.threads);
  const TokenDataset data = TokenDataset::open(o.data);
  InitialModel init = initial_model(o, pool);
  const ModelConfig& config = init.params.layout().config();
  if (data.max_token_id() >= config.vocab_size) {
    fail(
        "{}: the data holds token id {}, beyond the model's vocabulary of {} (tokenized with "
        "another tokenizer?)",
        o.data.string(), data.max_token_id(), config.vocab_size);
  }
  if (o.seq > config.max_position_embeddings) {
    fail("--seq {} is beyond the model's max_position_embeddings ({})", o.seq,
         config.max_position_embeddings);
  }
  std::optional<fs::path> tokenizer = o.tokenizer;
  if (!tokenizer && fs::exists(o.data / "tokenizer.json")) tokenizer = o.data / "tokenizer.json";
  if (!tokenizer) tokenizer = init.tokenizer;
  if (tokenizer && sha256_file_hex(*tokenizer) != data.tokenizer_sha256()) {
    fail("{} is not the tokenizer the data was built with (sha256 differs from {}/data.json)",
         tokenizer->string(), o.data.string());
  }

  const TrainStepOptions graph = graph_options(o);
  const bool indexer_only = o.stage == Stage::kWarmup;
  AdamW optimizer(init.params.shared_layout(), o.adamw, [&](const TrainTensor& t) {
    return indexer_only ? t.spec.module == Module::kIndexer : true;
  });
  ParameterBuffer params = std::move(init.params);
  const nlohmann::json settings = run_settings(o, config);
  TrainerState state;
  state.settings = settings;
  if (o.resume && has_checkpoint(o.output)) {
    // The settings first: a mismatch is then named as such, before any tensor is compared.
    check_resume_settings(read_checkpoint_state(o.output).settings, settings, o.output);
    ResumedCheckpoint resumed = load_checkpoint(o.output, params.shared_layout(), optimizer);
    params = std::move(resumed.params);
    state = resumed.state;
    fmt::print(stderr, "resuming {} at step {} of {}\n", o.output.string(), state.step, o.steps);
  } else if (o.resume) {
    fmt::print(stderr, "{} holds no checkpoint yet: starting at step 0\n", o.output.string());
  } else if (has_checkpoint(o.output)) {
    fail(
        "{} already holds a training checkpoint: pass --resume to continue it, or choose "
        "another -o",
        o.output.string());
  }

  // Everything that can refuse the data comes before the log is touched.
  BatchSampler sampler(data, Split::kTrain, o.seq, o.batch, o.seed);
  sampler.seek(state.data_position);
  std::vector<std::vector<int32_t>> heldout;
  if (data.tokens(Split::kHeldout) >= o.seq) {
    heldout = heldout_windows(data, o.seq, o.eval_windows);
  } else {
    fmt::print(stderr,
               "dsa: warning: the held-out split of {} has {} tokens, fewer than --seq {}: no "
               "held-out evaluation\n",
               o.data.string(), data.tokens(Split::kHeldout), o.seq);
  }
  auto heldout_loss = [&]() {
    double total = 0.0;
    for (const std::vector<int32_t>& window : heldout) {
      const TrainBatch batch{.tokens = window, .sequences = 1, .seq_len = o.seq, .targets = {}};
      total += graph.lm_loss ? train_step(params, batch, graph, nullptr, pool).lm_loss
                             : train_step(params, batch, graph, nullptr, pool).indexer_loss;
    }
    return total / double(heldout.size());
  };
  // The stages that train the indexer also log its recall of the dense attention mass
  // (TrainStepOptions::record_indexer_recall) over the rows with more than index_topk keys, mean
  // over rows and layers: the warm-up's aim, measured as dsa eval does.
  const int64_t topk = params.layout().config().index_topk;
  const bool log_recall = graph.indexer_loss && o.seq > topk;
  // {recall, oracle recall}: the oracle is the best any k keys could hold (train_graph.h).
  auto heldout_recall = [&]() {
    TrainStepOptions dense;
    dense.attention = AttentionMode::kDense;
    dense.lm_loss = false;
    dense.record_indexer_recall = true;
    double recall = 0.0, oracle = 0.0;
    int64_t rows = 0;
    for (const std::vector<int32_t>& window : heldout) {
      const TrainBatch batch{.tokens = window, .sequences = 1, .seq_len = o.seq, .targets = {}};
      const TrainStepResult r = train_step(params, batch, dense, nullptr, pool);
      for (size_t l = 0; l < r.indexer_recall.size(); ++l) {
        for (int64_t t = topk; t < o.seq; ++t) {
          recall += r.indexer_recall[l][size_t(t)];
          oracle += r.indexer_oracle_recall[l][size_t(t)];
        }
        rows += o.seq - topk;
      }
    }
    const double n = double(std::max<int64_t>(rows, 1));
    return std::pair{recall / n, oracle / n};
  };

  // The log: truncated to what the checkpoint had seen, so a resumed log has no duplicate steps.
  std::FILE* log = nullptr;
  if (!o.log.empty()) {
    if (state.step > 0 && fs::exists(o.log)) {
      if (fs::file_size(o.log) < state.log_bytes) {
        fail(
            "{} is shorter than when the checkpoint was written ({} bytes): not the log of "
            "this run?",
            o.log.string(), state.log_bytes);
      }
      fs::resize_file(o.log, state.log_bytes);
    }
    // A log beside the model folder (models/run.jsonl) may be the first file under models/.
    std::error_code ignored;
    if (o.log.has_parent_path()) fs::create_directories(o.log.parent_path(), ignored);
    log = std::fopen(o.log.string().c_str(), state.step > 0 ? "ab" : "wb");
    if (!log) fail("cannot open the log {} for writing: {}", o.log.string(), std::strerror(errno));
  }
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> log_closer(
      log, [](std::FILE* f) { return f ? std::fclose(f) : 0; });

  const StepSettings step_settings{.graph = graph,
                                   .schedule = o.schedule,
                                   .clip = o.clip,
                                   .bias_update_rate = o.bias_update_rate};
  ParameterBuffer grads(params.shared_layout());
  std::vector<std::vector<int32_t>> tokens(size_t(o.grad_accum));
  StatusLine status(o.steps);
  const Clock::time_point start = Clock::now();
  const double elapsed_before = state.elapsed_s;
  const int64_t first_step = state.step;
  auto save = [&]() {
    if (log) std::fflush(log);
    state.log_bytes = log ? uint64_t(std::ftell(log)) : 0;
    try {
      save_checkpoint(o.output, params, optimizer, state, tokenizer);
    } catch (const Error& e) {
      fail("saving the checkpoint of step {}: {}", state.step, e.what());
    }
    if (!o.plot.empty() && !o.log.empty())
      write_plot(o.log, o.plot, "dsa train: " + stage_name(o.stage));
  };
  for (int64_t step = state.step; step < o.steps; ++step) {
    std::vector<TrainBatch> micro(size_t(o.grad_accum));
    for (int64_t a = 0; a < o.grad_accum; ++a) {
      sampler.next(tokens[static_cast<size_t>(a)]);
      micro[static_cast<size_t>(a)] = {.tokens = tokens[static_cast<size_t>(a)],
                                       .sequences = o.batch,
                                       .seq_len = o.seq,
                                       .targets = {}};
    }
    const StepStats stats =
        run_optimizer_step(params, grads, optimizer, micro, step_settings, step, pool);
    state.step = step + 1;
    state.data_position = sampler.position();
    state.tokens_seen += stats.tokens;
    const double session_s = std::chrono::duration<double>(Clock::now() - start).count();
    state.elapsed_s = elapsed_before + session_s;
    const double tokens_per_s =
        double(state.step - first_step) * double(stats.tokens) / std::max(session_s, 1e-9);
    nlohmann::json line = {{"step", state.step},
                           {"loss", graph.lm_loss ? stats.loss : stats.indexer_loss},
                           {"lr", stats.lr},
                           {"grad_norm", stats.grad_norm},
                           {"tokens", state.tokens_seen},
                           {"tokens_per_s", tokens_per_s},
                           {"elapsed_s", state.elapsed_s},
                           {"peak_rss_bytes", peak_rss_bytes()}};
    if (graph.indexer_loss && graph.lm_loss) line["indexer_loss"] = stats.indexer_loss;
    if (graph.balance_alpha > 0.0f) line["balance_loss"] = stats.balance_loss;
    const bool last = state.step == o.steps;
    if (!heldout.empty() && ((o.eval_every > 0 && state.step % o.eval_every == 0) || last)) {
      line["heldout_loss"] = heldout_loss();
      if (log_recall) {
        const auto [recall, oracle] = heldout_recall();
        line["heldout_recall"] = recall;
        line["heldout_oracle_recall"] = oracle;
      }
    }
    if (log) {
      const std::string text = line.dump() + "\n";
      if (std::fwrite(text.data(), 1, text.size(), log) != text.size() || std::fflush(log) != 0) {
        fail("cannot write the log {}: {} (the last checkpoint written is kept as it was)",
             o.log.string(), std::strerror(errno));
      }
    }
    const double eta = double(o.steps - state.step) * session_s /
                       double(std::max<int64_t>(state.step - first_step, 1));
    status.update(state.step, line["loss"].get<double>(), tokens_per_s, eta);
    if (last || (o.save_every > 0 && state.step % o.save_every == 0)) save();
  }
  status.finish();
  if (first_step >= o.steps) save();
  // Peak RSS: the memory measure (activations grow with seq × batch; --recompute cuts
  // them), the whole process's high-water mark as /proc reports it.
  fmt::print(stderr, "trained {} steps ({} tokens) in {}, {} products; peak RSS {}; model in {}\n",
             state.step, format_count(uint64_t(state.tokens_seen)),
             format_duration(state.elapsed_s), matmul_precision_name(o.precision),
             format_bytes(peak_rss_bytes()), o.output.string());
}

}  // namespace dsa::train
