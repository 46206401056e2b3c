#include "perf/train_bench.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>

#include "core/error.h"
#include "core/float_formats.h"
#include "core/progress.h"
#include "core/safetensors_writer.h"
#include "model/presets.h"
#include "model/tensor_layout.h"
#include "ops/gemm/linear_train.h"
#include "ops/loss/cross_entropy.h"
#include "perf/model_bench.h"

extern char** environ;

namespace dsa {

namespace fs = std::filesystem;
using nlohmann::json;

TrainStepOptions train_bench_stage(const std::string& stage) {
  TrainStepOptions g;
  if (stage == "dense") return g;
  if (stage == "warmup") {
    g.lm_loss = false;
    g.indexer_loss = true;
    return g;
  }
  if (stage == "sparse") {
    g.attention = AttentionMode::kSparse;
    g.indexer_loss = true;
    return g;
  }
  fail("--stage: '{}' is not one of dense, warmup, sparse", stage);
}

namespace {

bool runs_indexer(const ModelConfig& m, const TrainStepOptions& o) {
  return m.has_indexer() && (o.attention == AttentionMode::kSparse || o.indexer_loss);
}

// Weights of one layer's attention projections: [q_a, q_b] or [q_proj], kv_a, kv_b, o.
int64_t attention_params(const ModelConfig& m) {
  const int64_t D = m.hidden_size, H = m.num_attention_heads, qk = m.qk_head_dim();
  const int64_t q = m.has_q_lora() ? m.q_lora_rank * D + H * qk * m.q_lora_rank : H * qk * D;
  return q + (m.kv_lora_rank + m.qk_rope_head_dim) * D +
         H * (m.qk_nope_head_dim + m.v_head_dim) * m.kv_lora_rank + D * H * m.v_head_dim;
}

// Weights of one layer's FFN that a token passes through.
int64_t ffn_params(const ModelConfig& m, int64_t layer) {
  const int64_t D = m.hidden_size;
  if (!m.is_moe_layer(layer)) return 3 * D * m.intermediate_size;
  return m.n_routed_experts * D + m.num_experts_per_tok * 3 * D * m.moe_intermediate_size +
         3 * D * m.shared_intermediate_size();
}

int64_t indexer_params(const ModelConfig& m) {
  const int64_t D = m.hidden_size, Hi = m.index_n_heads, Di = m.index_head_dim;
  return Hi * Di * m.q_lora_rank + Di * D + Hi * D;
}

}  // namespace

TrainFlops count_train_flops(const ModelConfig& m, int64_t seq, const TrainStepOptions& o) {
  DSA_CHECK(seq >= 1, "sequence length {}", seq);
  TrainFlops f;
  f.active_params = m.vocab_size * m.hidden_size;  // the LM head
  for (int64_t l = 0; l < m.num_hidden_layers; ++l) {
    f.active_params += attention_params(m) + ffn_params(m, l);
  }
  const bool indexer = runs_indexer(m, o);
  if (indexer) f.indexer_params = m.num_hidden_layers * indexer_params(m);
  const double main_factor = o.lm_loss ? 6.0 : 2.0;
  const double indexer_factor = o.indexer_loss ? 4.0 : 2.0;  // its backward is dW only
  f.matmul = main_factor * double(f.active_params) + indexer_factor * double(f.indexer_params);

  const double H = double(m.num_attention_heads), qk = double(m.qk_head_dim()),
               v = double(m.v_head_dim);
  const bool sparse = o.attention == AttentionMode::kSparse;
  double keys = 0, causal = 0;  // summed over the rows of a sequence
  for (int64_t t = 0; t < seq; ++t) {
    causal += double(t + 1);
    keys += double(sparse ? std::min<int64_t>(m.index_topk, t + 1) : t + 1);
  }
  const double layers = double(m.num_hidden_layers), rows = double(seq);
  f.attention = (o.lm_loss ? 3.0 : 1.0) * 2.0 * H * (qk + v) * keys / rows * layers;
  if (indexer) {
    const double scores = 2.0 * double(m.index_n_heads) * double(m.index_head_dim + 1) * causal;
    const double target = o.indexer_loss ? 2.0 * H * qk * keys : 0.0;
    f.indexer = ((o.indexer_loss ? 3.0 : 1.0) * scores + target) / rows * layers;
  }
  return f;
}

double TrainGemm::flops() const {
  return 2.0 * double(m) * double(n) * double(k) * double(1 + int(dx) + int(dw));
}

std::vector<TrainGemm> train_gemms(const ModelConfig& m, int64_t rows,
                                   const std::vector<std::vector<int64_t>>& expert_load,
                                   const TrainStepOptions& o, int64_t lm_head_chunk) {
  DSA_CHECK(rows >= 1 && lm_head_chunk >= 1, "rows {}, chunk {}", rows, lm_head_chunk);
  const int64_t N = rows, D = m.hidden_size, H = m.num_attention_heads, qk = m.qk_head_dim();
  const bool train = o.lm_loss;
  std::vector<TrainGemm> g;
  auto add = [&](std::string weight, int64_t mm, int64_t n, int64_t k, bool dx, bool dw,
                 int64_t chunk = 0) {
    g.push_back(
        {.weight = std::move(weight), .m = mm, .n = n, .k = k, .dx = dx, .dw = dw, .chunk = chunk});
  };
  auto mlp = [&](const std::string& p, int64_t n, int64_t inter) {
    add(p + "gate_proj.weight", n, inter, D, train, train);
    add(p + "up_proj.weight", n, inter, D, train, train);
    add(p + "down_proj.weight", n, D, inter, train, train);
  };
  for (int64_t l = 0; l < m.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    if (m.has_q_lora()) {
      add(a + "q_a_proj.weight", N, m.q_lora_rank, D, train, train);
      add(a + "q_b_proj.weight", N, H * qk, m.q_lora_rank, train, train);
    } else {
      add(a + "q_proj.weight", N, H * qk, D, train, train);
    }
    add(a + "kv_a_proj_with_mqa.weight", N, m.kv_lora_rank + m.qk_rope_head_dim, D, train, train);
    add(a + "kv_b_proj.weight", N, H * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank, train,
        train);
    add(a + "o_proj.weight", N, D, H * m.v_head_dim, train, train);
    if (runs_indexer(m, o)) {
      const int64_t Hi = m.index_n_heads, Di = m.index_head_dim;
      add(a + "indexer.wq_b.weight", N, Hi * Di, m.q_lora_rank, false, o.indexer_loss);
      add(a + "indexer.wk.weight", N, Di, D, false, o.indexer_loss);
      add(a + "indexer.weights_proj.weight", N, Hi, D, false, o.indexer_loss);
    }
    if (!m.is_moe_layer(l)) {
      mlp(p + "mlp.", N, m.intermediate_size);
      continue;
    }
    add(p + "mlp.gate.weight", N, m.n_routed_experts, D, train, train);
    const std::vector<int64_t>* load =
        size_t(l) < expert_load.size() ? &expert_load[size_t(l)] : nullptr;
    for (int64_t e = 0; e < m.n_routed_experts; ++e) {
      const int64_t n = load && size_t(e) < load->size() ? (*load)[size_t(e)] : 0;
      if (n == 0) continue;
      const int64_t padded = std::max<int64_t>(16, (n + 15) / 16 * 16);  // as train_ffn.cc
      mlp(p + "mlp.experts." + std::to_string(e) + ".", padded, m.moe_intermediate_size);
    }
    if (m.n_shared_experts > 0) mlp(p + "mlp.shared_experts.", N, m.shared_intermediate_size());
  }
  add("lm_head.weight", N, m.vocab_size, D, train, train, lm_head_chunk);
  return g;
}

void validate(const TrainBenchConfig& c, const ModelConfig& model) {
  if (c.batch < 1) fail("bench train: --batch {} must be at least 1", c.batch);
  if (c.seq < 2) fail("bench train: --seq {} must be at least 2 (a next-token target)", c.seq);
  if (c.seq > model.max_position_embeddings) {
    fail("bench train: --seq {} exceeds the model's max_position_embeddings ({})", c.seq,
         model.max_position_embeddings);
  }
  if (c.warmup < 0) fail("bench train: --warmup {} must be at least 0", c.warmup);
  if (c.runs < 1) fail("bench train: --runs {} must be at least 1", c.runs);
  if (c.lm_head_chunk < 0) {
    fail("bench train: lm_head_chunk {} must be at least 0", c.lm_head_chunk);
  }
  if ((c.graph.attention == AttentionMode::kSparse || c.graph.indexer_loss) &&
      !model.has_indexer()) {
    fail(
        "bench train: the sparse and warmup stages need the lightning indexer, which this {} "
        "model does not have",
        architecture_name(model.architecture));
  }
}

std::vector<int32_t> train_bench_tokens(const ModelConfig& model, int64_t batch, int64_t seq,
                                        uint64_t seed) {
  DSA_CHECK(batch >= 1 && seq >= 1 && model.vocab_size >= 1, "{} x {} tokens", batch, seq);
  std::vector<int32_t> tokens(size_t(batch * seq));
  uint64_t state = seed;
  for (int32_t& token : tokens) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    token = int32_t(z % uint64_t(model.vocab_size));  // the modulo bias is irrelevant here
  }
  return tokens;
}

ParameterBuffer train_bench_parameters(const std::string& init, uint64_t seed, ThreadPool& pool) {
  const fs::path path(init);
  if (fs::is_directory(path)) return load_parameters(path, pool);
  ModelConfig config =
      fs::is_regular_file(path) ? load_model_config(path) : find_model_preset(init).config;
  config.quantization.reset();  // training holds bf16-valued fp32 weights
  validate_model_config(config, init);
  return initial_parameters(config, seed, pool);
}

namespace {

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

}  // namespace

TimingStats TrainBenchResult::tokens_per_second() const {
  std::vector<double> rates;
  for (double s : step_seconds) rates.push_back(double(tokens_per_step) / s);
  return summarize(rates);
}

namespace {

// One pass over the step's products with the training linear op, on the real weights; dW goes
// into `grads` (scratch), activations into shared scratch buffers of the largest size.
struct GemmSuite {
  std::vector<TrainGemm> gemms;
  std::vector<float> x, y, dx;
  std::vector<int32_t> targets;  // the LM head's: any valid ids
  const ParameterBuffer& params;
  ParameterBuffer& grads;
  MatmulPrecision precision;

  GemmSuite(std::vector<TrainGemm> list, const ParameterBuffer& p, ParameterBuffer& g,
            MatmulPrecision matmul)
      : gemms(std::move(list)), params(p), grads(g), precision(matmul) {
    int64_t xs = 0, ys = 0, rows = 0;
    for (const TrainGemm& t : gemms) {
      xs = std::max(xs, t.m * t.k);
      if (t.chunk == 0) ys = std::max(ys, t.m * t.n);
      rows = std::max(rows, t.m);
    }
    targets.assign(size_t(rows), 0);
    // Small non-zero values (no denormals, nothing a kernel could skip).
    x.assign(size_t(xs), 0.5f);
    y.assign(size_t(ys), 0.25f);
    dx.assign(size_t(xs), 0.0f);
  }
  double flops() const {
    double total = 0;
    for (const TrainGemm& t : gemms) total += t.flops();
    return total;
  }
  void run(ThreadPool& pool) {
    for (const TrainGemm& t : gemms) {
      if (t.chunk > 0) {  // the LM head, fused with the loss as the step runs it
        float loss_sum = 0.0f;
        lm_head_cross_entropy(
            LmHeadCrossEntropyParams{.h = x.data(),
                                     .weight = params.data(t.weight),
                                     .targets = targets.data(),
                                     .grad_scale = 1.0f / float(t.m),
                                     .loss_sum = &loss_sum,
                                     .dh = t.dx ? dx.data() : nullptr,
                                     .dweight = t.dw ? grads.data(t.weight) : nullptr,
                                     .tokens = t.m,
                                     .dim = t.k,
                                     .vocab = t.n,
                                     .chunk_rows = t.chunk,
                                     .precision = precision},
            pool);
        continue;
      }
      LinearTrainParams p{.x = x.data(),
                          .weight = params.data(t.weight),
                          .y = y.data(),
                          .m = t.m,
                          .n = t.n,
                          .k = t.k,
                          .precision = precision};
      linear_train_forward(p, pool);
      if (!t.dx && !t.dw) continue;
      p.dy = y.data();
      p.dx = t.dx ? dx.data() : nullptr;
      p.dweight = t.dw ? grads.data(t.weight) : nullptr;
      linear_backward(p, pool);
    }
  }
};

}  // namespace

TrainBenchResult run_train_bench(const ParameterBuffer& params, const TrainBenchConfig& config,
                                 const OptimizerStepFn& step, ThreadPool& pool) {
  const ModelConfig& model = params.layout().config();
  validate(config, model);
  TrainBenchResult r;
  r.tokens_per_step = config.batch * config.seq;
  r.warmup = config.warmup;
  r.flops = count_train_flops(model, config.seq, config.graph);
  const std::vector<int32_t> tokens =
      train_bench_tokens(model, config.batch, config.seq, config.seed);
  const TrainBatch batch{
      .tokens = tokens, .sequences = config.batch, .seq_len = config.seq, .targets = {}};
  for (int i = 0; i < config.warmup + config.runs; ++i) {
    const double start = now_seconds(), cpu_start = process_cpu_seconds();
    r.losses.push_back(step(batch, i));
    const double seconds = now_seconds() - start, cpu = process_cpu_seconds() - cpu_start;
    if (i >= config.warmup) {
      r.step_seconds.push_back(seconds);
      r.step_cpu_seconds.push_back(cpu);
    }
  }
  if (!config.breakdown) return r;

  const int warmup = std::min(config.warmup, 1);
  TrainStepResult forward;
  r.forward_seconds = time_runs(warmup, config.runs, [&] {
    forward = train_step(params, batch, config.graph, nullptr, pool);
  });
  ParameterBuffer grads(params.shared_layout());
  r.forward_backward_seconds = time_runs(warmup, config.runs, [&] {
    grads.zero();
    train_step(params, batch, config.graph, &grads, pool);
  });
  // train_graph.cc's chunk rule for the LM head (about 32 M floats of logits, 64..1024 rows).
  const int64_t lm_chunk =
      config.lm_head_chunk > 0
          ? config.lm_head_chunk
          : std::clamp<int64_t>((int64_t(32) << 20) / model.vocab_size / 16 * 16, 64, 1024);
  GemmSuite suite(
      train_gemms(model, r.tokens_per_step, forward.expert_load, config.graph, lm_chunk), params,
      grads, config.graph.matmul);
  r.gemm_flops = suite.flops();
  r.gemm_seconds = time_runs(warmup, config.runs, [&] { suite.run(pool); });
  return r;
}

// ---- processes ------------------------------------------------------------------------------

namespace {

struct ProcessResult {
  int status = -1;  // exit status, or -1 if it did not exit normally
  std::string out;  // its stdout
};

// Runs argv[0] (a path) with `env` added to ours, stdout captured, stderr inherited (or sent to
// /dev/null with `quiet`).
ProcessResult run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          bool quiet) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) fail("cannot create a pipe: {}", std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[1]);
  if (quiet) posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<std::string> env_strings = env;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('=') + 1);
    const bool overridden = std::any_of(env.begin(), env.end(),
                                        [&](const std::string& s) { return s.rfind(key, 0) == 0; });
    if (!overridden) env_strings.push_back(entry);
  }
  std::vector<char*> args, envp;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const std::string& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int spawned =
      posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  ProcessResult result;
  if (spawned != 0) {
    close(pipe_fds[0]);
    fail("cannot run {}: {}", argv[0], std::strerror(spawned));
  }
  char buffer[65536];
  for (;;) {
    const ssize_t n = read(pipe_fds[0], buffer, sizeof buffer);
    if (n > 0) {
      result.out.append(buffer, size_t(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

constexpr const char* kTorchScript = "scripts/bench_train_torch.py";

}  // namespace

std::optional<fs::path> find_source_tree(const fs::path& hint) {
  if (!hint.empty()) {
    if (!fs::is_regular_file(hint / kTorchScript)) {
      fail("--source: {} has no {}", hint.string(), kTorchScript);
    }
    return hint;
  }
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (error) return std::nullopt;
  for (fs::path dir = exe.parent_path(); !dir.empty(); dir = dir.parent_path()) {
    if (fs::is_regular_file(dir / kTorchScript, error)) return dir;
    if (dir == dir.root_path()) break;
  }
  return std::nullopt;
}

std::string source_commit(const fs::path& tree) {
  const char* git = "/usr/bin/git";
  if (!fs::exists(git) || !fs::exists(tree / ".git")) return "unknown";
  const ProcessResult head =
      run_process({git, "-C", tree.string(), "rev-parse", "--short", "HEAD"}, {}, true);
  if (head.status != 0 || head.out.empty()) return "unknown";
  std::string commit = head.out.substr(0, head.out.find('\n'));
  const ProcessResult status = run_process(
      {git, "-C", tree.string(), "status", "--porcelain", "--untracked-files=no"}, {}, true);
  if (status.status == 0 && !status.out.empty()) commit += "+dirty";
  return commit;
}

void write_bench_model(const ParameterBuffer& params, const fs::path& dir) {
  fs::create_directories(dir);
  write_file_atomically(dir / "config.json",
                        model_config_to_json(params.layout().config()).dump(2) + "\n");
  // The starting weights are bf16 values (init-model's, or a checkpoint's), so BF16 is exact and
  // the folder is a checkpoint the engine loads too; other values go out as F32 (the script
  // reads both).
  const std::span<const float> values = params.values();
  const bool bf16_exact = std::all_of(
      values.begin(), values.end(), [](float v) { return round_to_bf16(v) == v || std::isnan(v); });
  SafetensorsWriter writer;
  add_parameter_tensors(params, bf16_exact ? DType::BF16 : DType::F32, writer);
  writer.set_metadata("format", "pt");
  writer.write(dir / "model.safetensors");
}

void write_bench_tokens(std::span<const int32_t> tokens, int64_t batch, int64_t seq,
                        const fs::path& file) {
  DSA_CHECK(int64_t(tokens.size()) == batch * seq, "{} tokens for {} x {}", tokens.size(), batch,
            seq);
  json rows = json::array();
  for (int64_t b = 0; b < batch; ++b) {
    rows.push_back(std::vector<int32_t>(tokens.begin() + b * seq, tokens.begin() + (b + 1) * seq));
  }
  write_file_atomically(file, json{{"tokens", rows}}.dump() + "\n");
}

TorchBaselineResult parse_torch_baseline(const std::string& text) {
  // The JSON object is the script's last line (torch may print warnings before it).
  std::string line = text;
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  const size_t newline = line.rfind('\n');
  if (newline != std::string::npos) line = line.substr(newline + 1);
  try {
    const json j = json::parse(line);
    TorchBaselineResult r;
    r.torch_version = j.at("torch_version").get<std::string>();
    r.threads = j.at("threads").get<int>();
    r.step_seconds = j.at("step_seconds").get<std::vector<double>>();
    r.losses = j.at("losses").get<std::vector<double>>();
    if (r.step_seconds.empty()) fail("no timed steps");
    return r;
  } catch (const std::exception& e) {
    fail("the PyTorch baseline's output is not its JSON record ({}): '{}'", e.what(),
         line.substr(0, 200));
  }
}

TorchBaselineResult run_torch_baseline(const TorchBaselineConfig& c) {
  const std::string threads = std::to_string(c.threads);
  const std::vector<std::string> argv = {c.python.string(), c.script.string(),
                                         "--model",         c.model_dir.string(),
                                         "--tokens",        c.tokens_file.string(),
                                         "--batch",         std::to_string(c.batch),
                                         "--seq",           std::to_string(c.seq),
                                         "--threads",       threads,
                                         "--steps",         std::to_string(c.runs),
                                         "--warmup",        std::to_string(c.warmup),
                                         "--stage",         c.stage,
                                         "--precision",     c.precision};
  if (!fs::exists(c.python)) fail("--torch: no Python at {}", c.python.string());
  std::vector<std::string> env = {"OPENBLAS_NUM_THREADS=" + threads, "OMP_NUM_THREADS=" + threads};
  for (const std::string& setting : c.env) {
    const size_t eq = setting.find('=');
    if (eq == 0 || eq == std::string::npos) {
      fail("--torch-env: '{}' is not NAME=VALUE", setting);
    }
    const std::string key = setting.substr(0, eq + 1);
    std::erase_if(env, [&](const std::string& e) { return e.rfind(key, 0) == 0; });
    env.push_back(setting);
  }
  const ProcessResult p = run_process(argv, env, false);
  if (p.status != 0) {
    fail("--torch: {} {} failed (exit status {}); it needs Debian's python3-torch",
         c.python.string(), c.script.string(), p.status);
  }
  return parse_torch_baseline(p.out);
}

// ---- the report -----------------------------------------------------------------------------

namespace {

double percent(double rate, double peak) { return peak > 0 ? 100.0 * rate / peak : 0.0; }

TimingStats rates_of(const std::vector<double>& seconds, int64_t tokens) {
  std::vector<double> rates;
  for (double s : seconds) rates.push_back(double(tokens) / s);
  return summarize(rates);
}

std::string millions(double x) { return fmt::format("{:.3f} M", x * 1e-6); }

json stats_json(const TimingStats& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max},
          {"q1", s.q1},         {"q3", s.q3},   {"runs", s.runs}};
}

}  // namespace

std::string format_train_report(const TrainBenchReport& rep) {
  const TrainBenchResult& r = rep.dsa;
  const double peak = rep.peaks.fp32_flops_per_second;
  const double step_flops = r.step_flops();
  std::string out;
  out += fmt::format("dsa {} (commit {}), {}, {} threads, SIMD target {}, {} products (sgemm {})\n",
                     rep.version, rep.commit, rep.cpu, rep.threads, rep.simd_target, rep.precision,
                     rep.sgemm);
  out += fmt::format("fp32 FMA peak {:.1f} GFLOP/s ({}); load average (1 min) {:.2f}\n",
                     peak * 1e-9, rep.peak_given ? "given" : "measured", rep.load_average);
  out += fmt::format(
      "model {} ({}): {} parameters, {} active per token in matrix products{}; stage {}, "
      "{} tokens per step{}; peak RSS {}\n",
      rep.model, rep.architecture, millions(double(rep.params)),
      millions(double(r.flops.active_params)),
      r.flops.indexer_params
          ? fmt::format(" + {} indexer", millions(double(r.flops.indexer_params)))
          : "",
      rep.stage, r.tokens_per_step, rep.recompute ? ", layers recomputed in the backward" : "",
      format_bytes(rep.peak_rss));
  out += fmt::format(
      "model FLOP per token {} = matmul {} + attention {} + indexer {}; {:.2f} GFLOP per step\n\n",
      millions(r.flops.total()), millions(r.flops.matmul), millions(r.flops.attention),
      millions(r.flops.indexer), step_flops * 1e-9);

  out += "| engine | threads | step ms | tokens/s | GFLOP/s | % fp32 peak |\n";
  out += "|---|---:|---:|---:|---:|---:|\n";
  auto row = [&](const std::string& name, int threads, const std::vector<double>& seconds) {
    const TimingStats t = summarize(seconds), rate = rates_of(seconds, r.tokens_per_step);
    const double flop_rate = step_flops / t.median;
    out += fmt::format("| {} | {} | {:.1f} ± {:.1f} | {:.0f} ± {:.0f} | {:.1f} | {:.1f} |\n", name,
                       threads, t.median * 1e3, t.spread() * 1e3, rate.median, rate.spread(),
                       flop_rate * 1e-9, percent(flop_rate, peak));
  };
  row("dsa", rep.threads, r.step_seconds);
  if (rep.torch) {
    row("torch " + rep.torch->torch_version + " eager", rep.torch->threads,
        rep.torch->step_seconds);
  }
  out += fmt::format(
      "\nstep: forward, backward, clipping, AdamW and the router-bias update on one batch of "
      "random tokens;\nmedian ± half the min-max range over {} steps ({}{} warm-up).\n",
      r.step_seconds.size(),
      rep.rounds > 1 ? fmt::format("{} rounds alternating dsa and torch, each after ", rep.rounds)
                     : "after ",
      r.warmup);
  if (rep.torch && !rep.torch_env.empty()) {
    std::string settings;
    for (const std::string& e : rep.torch_env) settings += (settings.empty() ? "" : " ") + e;
    out += fmt::format("torch environment: {}\n", settings);
  }
  if (rep.torch) {
    const double ratio =
        r.tokens_per_second().median / rates_of(rep.torch->step_seconds, r.tokens_per_step).median;
    out += fmt::format("dsa / torch tokens/s: {:.2f}x\n", ratio);
    out += fmt::format("first-step loss: dsa {:.6f}, torch {:.6f}\n", r.losses.front(),
                       rep.torch->losses.front());
  }
  if (!r.step_cpu_seconds.empty()) {
    const double cpu = summarize(r.step_cpu_seconds).median;
    out += fmt::format("dsa process CPU time per step {:.1f} ms ({:.2f} threads busy on average)\n",
                       cpu * 1e3, cpu / r.step().median);
  }
  if (!r.forward_seconds.empty()) {
    const double step = r.step().median, fwd = summarize(r.forward_seconds).median,
                 fwd_bwd = summarize(r.forward_backward_seconds).median,
                 gemm = summarize(r.gemm_seconds).median;
    out += fmt::format(
        "\nbreakdown (medians, dsa): forward {:.1f} ms, backward {:.1f} ms, optimizer and the "
        "rest (step minus forward + backward) {:.1f} ms\n",
        fwd * 1e3, (fwd_bwd - fwd) * 1e3, (step - fwd_bwd) * 1e3);
    out += fmt::format(
        "matrix products alone (the step's linear layers at its shapes): {:.2f} GFLOP in {:.1f} "
        "ms = {:.1f} GFLOP/s, {:.1f}% of the fp32 FMA peak; {:.0f}% of the step's time at that "
        "rate\n",
        r.gemm_flops * 1e-9, gemm * 1e3, r.gemm_flops / gemm * 1e-9,
        percent(r.gemm_flops / gemm, peak), 100.0 * gemm / step);
  }
  return out;
}

json train_report_json(const TrainBenchReport& rep) {
  const TrainBenchResult& r = rep.dsa;
  const double peak = rep.peaks.fp32_flops_per_second;
  auto engine = [&](const std::vector<double>& seconds) {
    const TimingStats t = summarize(seconds);
    const double flop_rate = r.step_flops() / t.median;
    return json{{"step_seconds", seconds},
                {"step_ms", t.median * 1e3},
                {"step_ms_min", t.min * 1e3},
                {"step_ms_max", t.max * 1e3},
                {"tokens_per_s", rates_of(seconds, r.tokens_per_step).median},
                {"gflops", flop_rate * 1e-9},
                {"pct_peak_flops", percent(flop_rate, peak)}};
  };
  json j = {{"model", rep.model},
            {"architecture", rep.architecture},
            {"n_params", rep.params},
            {"stage", rep.stage},
            {"recompute", rep.recompute},
            {"peak_rss_bytes", rep.peak_rss},
            {"sgemm", rep.sgemm},
            {"precision", rep.precision},
            {"threads", rep.threads},
            {"tokens_per_step", r.tokens_per_step},
            {"warmup", r.warmup},
            {"rounds", rep.rounds},
            {"active_params", r.flops.active_params},
            {"indexer_params", r.flops.indexer_params},
            {"flop_per_token", r.flops.total()},
            {"matmul_flop_per_token", r.flops.matmul},
            {"attention_flop_per_token", r.flops.attention},
            {"indexer_flop_per_token", r.flops.indexer},
            {"peak_fp32_gflops", peak * 1e-9},
            {"peak_measured", !rep.peak_given},
            {"cpu", rep.cpu},
            {"simd_target", rep.simd_target},
            {"dsa_version", rep.version},
            {"commit", rep.commit},
            {"load_average_1m", rep.load_average}};
  json d = engine(r.step_seconds);
  d["losses"] = r.losses;
  d["step_cpu_seconds"] = r.step_cpu_seconds;
  if (!r.forward_seconds.empty()) {
    const double gemm = summarize(r.gemm_seconds).median;
    d["forward"] = stats_json(summarize(r.forward_seconds));
    d["forward_backward"] = stats_json(summarize(r.forward_backward_seconds));
    d["gemm"] = stats_json(summarize(r.gemm_seconds));
    d["gemm_flops"] = r.gemm_flops;
    d["gemm_gflops"] = r.gemm_flops / gemm * 1e-9;
    d["gemm_pct_peak_flops"] = percent(r.gemm_flops / gemm, peak);
  }
  j["dsa"] = d;
  if (rep.torch) {
    json t = engine(rep.torch->step_seconds);
    t["torch_version"] = rep.torch->torch_version;
    t["threads"] = rep.torch->threads;
    t["losses"] = rep.torch->losses;
    t["env"] = rep.torch_env;
    j["torch"] = t;
    j["speedup_vs_torch"] = d["tokens_per_s"].get<double>() / t["tokens_per_s"].get<double>();
  }
  return j;
}

}  // namespace dsa
