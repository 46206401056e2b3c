// The training benchmark's accounting and report (src/perf/train_bench.h): the model FLOPs of
// each stage counted by hand for the tiny preset, the GEMM list of a step against 6 x active
// parameters, the runner with a stand-in optimizer step, the PyTorch record parser, the model
// and batch files the baseline reads, and the report's format. No timing is checked.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/presets.h"
#include "model/train_parameters.h"
#include "perf/train_bench.h"
#include "support/test_util.h"

namespace dsa {
namespace {

using nlohmann::json;

ModelConfig tiny() {
  ModelConfig c = find_model_preset("tiny").config;
  c.quantization.reset();
  return c;
}

// The tiny preset (hidden 256, 2 layers: a dense FFN then a MoE of 8 experts, top 2, one shared
// expert, 4 heads of 32 + 64 RoPE dims for q·k and 32 for v, q_lora 128, kv latent 128, indexer
// 4 heads x 128, vocabulary 1024), worked out by hand:
//   attention per layer  q_a 128·256 + q_b (4·96)·128 + kv_a (128+64)·256 + kv_b (4·64)·128
//                        + o 256·(4·32) = 32768 + 49152 + 49152 + 32768 + 32768 = 196608
//   dense FFN            3 · 256 · 512 = 393216
//   MoE per token        router 8·256 + 2 experts · 3·256·128 + shared 3·256·128
//                        = 2048 + 196608 + 98304 = 296960
//   LM head              1024 · 256 = 262144
constexpr int64_t kTinyActive = 2 * 196608 + 393216 + 296960 + 262144;  // 1,345,536
//   indexer per layer    wq_b (4·128)·128 + wk 128·256 + weights_proj 4·256 = 99328
constexpr int64_t kTinyIndexer = 2 * 99328;

TEST(TrainFlops, DenseStageCountsSixTimesActiveParametersPlusAttention) {
  const TrainFlops f = count_train_flops(tiny(), 512, train_bench_stage("dense"));
  EXPECT_EQ(f.active_params, kTinyActive);
  EXPECT_EQ(f.indexer_params, 0);  // the dense stage does not run the indexer
  EXPECT_DOUBLE_EQ(f.matmul, 6.0 * kTinyActive);
  // Row t attends t + 1 keys: mean (T + 1) / 2 = 256.5; 2·H·(qk + v) = 2·4·128 FLOP per key
  // forward, x3 with the backward, two layers.
  EXPECT_DOUBLE_EQ(f.attention, 3.0 * 2 * 4 * 128 * 256.5 * 2);
  EXPECT_EQ(f.indexer, 0.0);
  EXPECT_DOUBLE_EQ(f.total(), f.matmul + f.attention);
}

TEST(TrainFlops, SparseStageCountsTheTopKKeysAndTheIndexer) {
  const TrainFlops f = count_train_flops(tiny(), 512, train_bench_stage("sparse"));
  EXPECT_EQ(f.active_params, kTinyActive);
  EXPECT_EQ(f.indexer_params, kTinyIndexer);
  // The indexer's products are trained for dW only: forward + one backward product.
  EXPECT_DOUBLE_EQ(f.matmul, 6.0 * kTinyActive + 4.0 * kTinyIndexer);
  // index_topk 16: rows t < 16 attend t + 1 keys, the rest 16: (136 + 496·16) / 512 per row.
  const double keys = (136.0 + 496.0 * 16) / 512;
  EXPECT_DOUBLE_EQ(f.attention, 3.0 * 2 * 4 * 128 * keys * 2);
  // Scores 2·Hi·(Di + 1) per causal pair, x3 with their backward, plus the KL's target
  // 2·H·qk per attended pair; two layers.
  EXPECT_DOUBLE_EQ(f.indexer, (3.0 * 2 * 4 * 129 * 256.5 + 2.0 * 4 * 96 * keys) * 2);
}

TEST(TrainFlops, WarmupStageRunsTheMainModelForwardOnly) {
  const TrainFlops f = count_train_flops(tiny(), 64, train_bench_stage("warmup"));
  EXPECT_DOUBLE_EQ(f.matmul, 2.0 * kTinyActive + 4.0 * kTinyIndexer);
  EXPECT_DOUBLE_EQ(f.attention, 2.0 * 4 * 128 * 32.5 * 2);  // dense keys, forward only
  EXPECT_DOUBLE_EQ(f.indexer, (3.0 * 2 * 4 * 129 * 32.5 + 2.0 * 4 * 96 * 32.5) * 2);
}

TEST(TrainFlops, StagesMapAsDsaTrain) {
  const TrainStepOptions dense = train_bench_stage("dense");
  EXPECT_EQ(dense.attention, AttentionMode::kDense);
  EXPECT_TRUE(dense.lm_loss);
  EXPECT_FALSE(dense.indexer_loss);
  const TrainStepOptions warmup = train_bench_stage("warmup");
  EXPECT_EQ(warmup.attention, AttentionMode::kDense);
  EXPECT_FALSE(warmup.lm_loss);
  EXPECT_TRUE(warmup.indexer_loss);
  const TrainStepOptions sparse = train_bench_stage("sparse");
  EXPECT_EQ(sparse.attention, AttentionMode::kSparse);
  EXPECT_TRUE(sparse.lm_loss);
  EXPECT_TRUE(sparse.indexer_loss);
  EXPECT_THROW(train_bench_stage("fast"), Error);
}

double total_flops(const std::vector<TrainGemm>& gemms) {
  double total = 0;
  for (const TrainGemm& g : gemms) total += g.flops();
  return total;
}

TEST(TrainGemms, BalancedStepIsSixTimesActiveParametersPerToken) {
  // 2048 tokens, top 2 of 8 experts: 512 rows each (a multiple of 16: no padding).
  const int64_t N = 2048;
  const std::vector<std::vector<int64_t>> load = {{}, std::vector<int64_t>(8, 512)};
  const std::vector<TrainGemm> gemms = train_gemms(tiny(), N, load, train_bench_stage("dense"), 64);
  EXPECT_DOUBLE_EQ(total_flops(gemms), 6.0 * double(kTinyActive) * double(N));
  for (const TrainGemm& g : gemms) {
    EXPECT_TRUE(g.dx && g.dw) << g.weight;
    EXPECT_EQ(g.weight.find("indexer"), std::string::npos) << g.weight;
  }
  // The LM head, fused with the loss: all rows, run in chunks of 64.
  const TrainGemm& head = gemms.back();
  EXPECT_EQ(head.weight, "lm_head.weight");
  EXPECT_EQ(head.m, N);
  EXPECT_EQ(head.chunk, 64);
  for (size_t i = 0; i + 1 < gemms.size(); ++i) EXPECT_EQ(gemms[i].chunk, 0) << gemms[i].weight;
}

TEST(TrainGemms, ExpertBatchesArePaddedAndUnusedExpertsSkipped) {
  const std::vector<std::vector<int64_t>> load = {{}, {5, 0, 16, 17, 0, 0, 0, 2}};
  const std::vector<TrainGemm> gemms = train_gemms(tiny(), 20, load, train_bench_stage("dense"), 7);
  std::map<std::string, int64_t> rows;
  for (const TrainGemm& g : gemms) rows[g.weight] = g.m;
  EXPECT_EQ(rows.at("model.layers.1.mlp.experts.0.gate_proj.weight"), 16);
  EXPECT_EQ(rows.at("model.layers.1.mlp.experts.2.up_proj.weight"), 16);
  EXPECT_EQ(rows.at("model.layers.1.mlp.experts.3.down_proj.weight"), 32);
  EXPECT_EQ(rows.at("model.layers.1.mlp.experts.7.gate_proj.weight"), 16);
  EXPECT_FALSE(rows.contains("model.layers.1.mlp.experts.1.gate_proj.weight"));
  EXPECT_EQ(rows.at("model.layers.1.mlp.shared_experts.up_proj.weight"), 20);
  EXPECT_EQ(rows.at("model.layers.0.mlp.gate_proj.weight"), 20);
  EXPECT_EQ(gemms.back().m, 20);
  EXPECT_EQ(gemms.back().chunk, 7);
}

TEST(TrainGemms, WarmupFreezesTheMainModelAndTrainsTheIndexerWeightsOnly) {
  const std::vector<TrainGemm> gemms = train_gemms(tiny(), 32, {}, train_bench_stage("warmup"), 64);
  int indexer = 0;
  for (const TrainGemm& g : gemms) {
    if (g.weight.find(".indexer.") != std::string::npos) {
      ++indexer;
      EXPECT_FALSE(g.dx) << g.weight;
      EXPECT_TRUE(g.dw) << g.weight;
    } else {
      EXPECT_FALSE(g.dx || g.dw) << g.weight;
    }
  }
  EXPECT_EQ(indexer, 6);  // wq_b, wk, weights_proj in two layers
  // Frozen products count their forward only.
  const TrainGemm& head = gemms.back();
  EXPECT_DOUBLE_EQ(head.flops(), 2.0 * 32 * 1024 * 256);
}

TEST(TrainBench, ValidateNamesTheBadField) {
  const ModelConfig m = tiny();
  const auto error_of = [&](const TrainBenchConfig& c) {
    try {
      validate(c, m);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  TrainBenchConfig ok;
  EXPECT_EQ(error_of(ok), "");
  TrainBenchConfig c = ok;
  c.batch = 0;
  EXPECT_NE(error_of(c).find("--batch 0 must be at least 1"), std::string::npos) << error_of(c);
  c = ok;
  c.seq = 1;
  EXPECT_NE(error_of(c).find("--seq 1 must be at least 2"), std::string::npos) << error_of(c);
  c = ok;
  c.seq = 4096;
  EXPECT_NE(error_of(c).find("max_position_embeddings (2048)"), std::string::npos);
  c = ok;
  c.runs = 0;
  EXPECT_NE(error_of(c).find("--runs 0"), std::string::npos);
  c = ok;
  c.warmup = -1;
  EXPECT_NE(error_of(c).find("--warmup -1"), std::string::npos);
  c = ok;
  c.graph = train_bench_stage("sparse");
  ModelConfig v3 = find_model_preset("tiny-v3").config;
  EXPECT_THROW(validate(c, v3), Error);
}

TEST(TrainBench, TokensAreDeterministicAndInTheVocabulary) {
  const ModelConfig m = tiny();
  const std::vector<int32_t> a = train_bench_tokens(m, 3, 17, 5),
                             b = train_bench_tokens(m, 3, 17, 5);
  const std::vector<int32_t> c = train_bench_tokens(m, 3, 17, 6);
  ASSERT_EQ(a.size(), 51u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (int32_t t : a) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, m.vocab_size);
  }
}

TEST(TrainBench, RunsTheStepsAndTheBreakdown) {
  ThreadPool pool(2);
  const ParameterBuffer params = train_bench_parameters("tiny", 3, pool);
  TrainBenchConfig config;
  config.batch = 2;
  config.seq = 12;
  config.warmup = 2;
  config.runs = 3;
  int calls = 0;
  std::vector<int64_t> steps;
  const TrainBenchResult r = run_train_bench(
      params, config,
      [&](const TrainBatch& batch, int64_t step) {
        EXPECT_EQ(batch.sequences, 2);
        EXPECT_EQ(batch.seq_len, 12);
        EXPECT_EQ(batch.tokens.size(), 24u);
        steps.push_back(step);
        return double(++calls);
      },
      pool);
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(steps, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(r.losses, (std::vector<double>{1, 2, 3, 4, 5}));
  EXPECT_EQ(r.step_seconds.size(), 3u);
  EXPECT_EQ(r.step_cpu_seconds.size(), 3u);
  EXPECT_EQ(r.tokens_per_step, 24);
  EXPECT_EQ(r.warmup, 2);
  EXPECT_EQ(r.forward_seconds.size(), 3u);
  EXPECT_EQ(r.forward_backward_seconds.size(), 3u);
  EXPECT_EQ(r.gemm_seconds.size(), 3u);
  // 24 tokens: every expert batch is padded to at least 16 rows, so the GEMMs do at least the
  // model's 6 x active parameters per token.
  EXPECT_GE(r.gemm_flops, 6.0 * double(kTinyActive) * 24);
  EXPECT_DOUBLE_EQ(r.step_flops(), r.flops.total() * 24);

  config.breakdown = false;
  const TrainBenchResult quick = run_train_bench(
      params, config, [](const TrainBatch&, int64_t) { return 0.0; }, pool);
  EXPECT_TRUE(quick.forward_seconds.empty());
  EXPECT_TRUE(quick.gemm_seconds.empty());
}

TEST(TrainBench, ParametersFromAPresetAConfigOrAFolder) {
  ThreadPool pool(1);
  const ParameterBuffer preset = train_bench_parameters("tiny", 4, pool);
  EXPECT_EQ(preset.layout().config().hidden_size, 256);
  EXPECT_FALSE(preset.layout().config().fp8());
  // The baseline's model folder holds the exact fp32 values and loads back as such.
  test::TempDir dir;
  write_bench_model(preset, dir / "model");
  const ParameterBuffer loaded = train_bench_parameters((dir / "model").string(), 0, pool);
  ASSERT_EQ(loaded.values().size(), preset.values().size());
  EXPECT_TRUE(std::equal(loaded.values().begin(), loaded.values().end(), preset.values().begin()));
  const ParameterBuffer from_config =
      train_bench_parameters((dir / "model" / "config.json").string(), 4, pool);
  EXPECT_TRUE(std::equal(from_config.values().begin(), from_config.values().end(),
                         preset.values().begin()));
  EXPECT_THROW(train_bench_parameters("no-such-preset", 1, pool), Error);
}

TEST(TrainBench, TokensFileHoldsTheRows) {
  test::TempDir dir;
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6};
  write_bench_tokens(tokens, 2, 3, dir / "tokens.json");
  const json j = json::parse(test::read_text_file(dir / "tokens.json"));
  EXPECT_EQ(j.at("tokens"), json::parse("[[1, 2, 3], [4, 5, 6]]"));
}

TEST(TorchBaseline, ParsesTheScriptsLastLine) {
  const TorchBaselineResult r = parse_torch_baseline(
      "UserWarning: something\n"
      R"({"torch_version": "1.13.0", "threads": 2, "stage": "dense", "step_seconds": [0.5, 0.25],)"
      R"( "losses": [7.0, 6.5, 6.0]})"
      "\n");
  EXPECT_EQ(r.torch_version, "1.13.0");
  EXPECT_EQ(r.threads, 2);
  EXPECT_EQ(r.step_seconds, (std::vector<double>{0.5, 0.25}));
  EXPECT_EQ(r.losses, (std::vector<double>{7.0, 6.5, 6.0}));
  EXPECT_THROW(parse_torch_baseline("Traceback (most recent call last):\n"), Error);
  EXPECT_THROW(parse_torch_baseline(R"({"torch_version": "1.13.0"})"), Error);
  EXPECT_THROW(parse_torch_baseline(
                   R"({"torch_version": "x", "threads": 1, "step_seconds": [], "losses": []})"),
               Error);
}

TrainBenchReport sample_report(bool with_torch) {
  TrainBenchReport rep;
  rep.model = "tiny";
  rep.architecture = "DeepseekV32ForCausalLM";
  rep.params = 2'398'000;
  rep.stage = "dense";
  rep.threads = 2;
  rep.cpu = "Test CPU";
  rep.simd_target = "AVX3";
  rep.sgemm = "avx512";
  rep.peak_rss = uint64_t(300) << 20;
  rep.version = "0.1.0";
  rep.commit = "abc1234";
  rep.load_average = 0.5;
  rep.peaks.fp32_flops_per_second = 400e9;
  rep.dsa.tokens_per_step = 1000;
  rep.dsa.warmup = 1;
  rep.dsa.flops.active_params = 1'000'000;
  rep.dsa.flops.matmul = 6e6;
  rep.dsa.flops.attention = 2e6;
  rep.dsa.step_seconds = {0.1, 0.1, 0.12};  // 8 GFLOP per step: 80 GFLOP/s at the median
  rep.dsa.step_cpu_seconds = {0.2, 0.2, 0.2};
  rep.dsa.losses = {7.5, 7.4, 7.3, 7.2};
  rep.dsa.forward_seconds = {0.03};
  rep.dsa.forward_backward_seconds = {0.09};
  rep.dsa.gemm_seconds = {0.05};
  rep.dsa.gemm_flops = 6e9;
  if (with_torch) {
    rep.torch = TorchBaselineResult{.torch_version = "1.13.0",
                                    .threads = 2,
                                    .step_seconds = {0.5, 0.6, 0.4},
                                    .losses = {7.5, 7.4}};
  }
  return rep;
}

TEST(TrainReport, TableRatioAndBreakdown) {
  const std::string text = format_train_report(sample_report(true));
  for (const char* line :
       {"dsa 0.1.0 (commit abc1234), Test CPU, 2 threads, SIMD target AVX3, fp32 products (sgemm "
        "avx512)\n",
        "fp32 FMA peak 400.0 GFLOP/s (measured); load average (1 min) 0.50\n",
        "stage dense, 1000 tokens per step; peak RSS 300.00 MiB\n",
        "model FLOP per token 8.000 M = matmul 6.000 M + attention 2.000 M + indexer 0.000 M; "
        "8.00 GFLOP per step\n",
        "| engine | threads | step ms | tokens/s | GFLOP/s | % fp32 peak |\n",
        "| dsa | 2 | 100.0 ± 10.0 | 10000 ± 833 | 80.0 | 20.0 |\n",
        "| torch 1.13.0 eager | 2 | 500.0 ± 100.0 | 2000 ± 417 | 16.0 | 4.0 |\n",
        "over 3 steps (after 1 warm-up)", "dsa / torch tokens/s: 5.00x\n",
        "first-step loss: dsa 7.500000, torch 7.500000\n",
        "dsa process CPU time per step 200.0 ms (2.00 threads busy on average)\n",
        "forward 30.0 ms, backward 60.0 ms, optimizer and the rest (step minus forward + "
        "backward) 10.0 ms\n",
        "6.00 GFLOP in 50.0 ms = 120.0 GFLOP/s, 30.0% of the fp32 FMA peak; 50% of the step's "
        "time"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin:\n" << text;
  }
  TrainBenchReport rounds = sample_report(true);
  rounds.rounds = 2;
  EXPECT_NE(format_train_report(rounds).find(
                "over 3 steps (2 rounds alternating dsa and torch, each after 1 warm-up)"),
            std::string::npos);
  rounds.torch_env = {"OMP_WAIT_POLICY=PASSIVE", "A=b"};
  EXPECT_NE(format_train_report(rounds).find("torch environment: OMP_WAIT_POLICY=PASSIVE A=b\n"),
            std::string::npos);
  const std::string alone = format_train_report(sample_report(false));
  EXPECT_EQ(alone.find("torch"), std::string::npos) << alone;
}

TEST(TrainReport, JsonRecord) {
  const json j = train_report_json(sample_report(true));
  for (const char* field : {"model",
                            "architecture",
                            "n_params",
                            "stage",
                            "threads",
                            "tokens_per_step",
                            "active_params",
                            "indexer_params",
                            "flop_per_token",
                            "matmul_flop_per_token",
                            "attention_flop_per_token",
                            "indexer_flop_per_token",
                            "peak_fp32_gflops",
                            "cpu",
                            "simd_target",
                            "dsa_version",
                            "commit",
                            "load_average_1m",
                            "dsa",
                            "torch",
                            "speedup_vs_torch"}) {
    EXPECT_TRUE(j.contains(field)) << field;
  }
  EXPECT_DOUBLE_EQ(j["dsa"]["tokens_per_s"].get<double>(), 10000.0);
  EXPECT_DOUBLE_EQ(j["dsa"]["gflops"].get<double>(), 80.0);
  EXPECT_DOUBLE_EQ(j["dsa"]["pct_peak_flops"].get<double>(), 20.0);
  EXPECT_DOUBLE_EQ(j["dsa"]["gemm_gflops"].get<double>(), 120.0);
  EXPECT_DOUBLE_EQ(j["torch"]["tokens_per_s"].get<double>(), 2000.0);
  EXPECT_DOUBLE_EQ(j["speedup_vs_torch"].get<double>(), 5.0);
  EXPECT_EQ(j["dsa"]["losses"].size(), 4u);
  EXPECT_FALSE(train_report_json(sample_report(false)).contains("torch"));
}

}  // namespace
}  // namespace dsa
