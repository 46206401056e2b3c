#include "eval/indexer_recall.h"

#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "core/decimal_index.h"
#include "core/error.h"
#include "model/train_graph.h"

namespace dsa::eval {
namespace {

double mean_over_layers(const std::vector<LayerIndexerRecall>& layers,
                        RunningMean LayerIndexerRecall::*field) {
  double sum = 0;
  int64_t n = 0;
  for (const LayerIndexerRecall& l : layers) {
    if ((l.*field).count() == 0) continue;
    sum += (l.*field).mean();
    ++n;
  }
  return n ? sum / double(n) : std::numeric_limits<double>::quiet_NaN();
}

// Every layer's `layers.N.indexer.topk` of the inference forward over `window`, concatenated
// over the prefill chunks: per layer [T, index_topk].
std::vector<std::vector<int32_t>> inference_topk(const Model& model,
                                                 std::span<const int32_t> window, int64_t chunk,
                                                 ThreadPool& pool) {
  const ModelConfig& c = model.config();
  const int64_t L = c.num_hidden_layers;
  std::vector<std::vector<int32_t>> topk(static_cast<size_t>(L));
  ForwardOptions options;
  options.attention = AttentionMode::kSparse;
  options.dump = [&](const std::string& name, const TensorView& value) {
    if (!name.ends_with(".indexer.topk")) return;
    const std::optional<int64_t> layer = index_after_prefix(name, "layers.");
    if (!layer || *layer >= L) return;  // MTP layers are not part of the comparison
    const size_t l = size_t(*layer);
    const int32_t* data = value.data<int32_t>();
    topk[l].insert(topk[l].end(), data, data + value.numel());
  };
  KvCache cache(c, int64_t(window.size()));
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  for (size_t pos = 0; pos < window.size(); pos += size_t(chunk)) {
    const size_t n = std::min(window.size() - pos, size_t(chunk));
    model.forward(window.subspan(pos, n), cache, logits, options, pool);
  }
  return topk;
}

}  // namespace

double IndexerRecallResult::mean_recall() const {
  return mean_over_layers(layers, &LayerIndexerRecall::recall);
}
double IndexerRecallResult::mean_oracle() const {
  return mean_over_layers(layers, &LayerIndexerRecall::oracle);
}
double IndexerRecallResult::mean_chance() const {
  return mean_over_layers(layers, &LayerIndexerRecall::chance);
}
double IndexerRecallResult::mean_overlap() const {
  return mean_over_layers(layers, &LayerIndexerRecall::overlap);
}

int64_t count_common_keys(std::span<const int32_t> a, std::span<const int32_t> b) {
  int64_t common = 0;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] < 0) {
      ++i;
    } else if (b[j] < 0) {
      ++j;
    } else if (a[i] < b[j]) {
      ++i;
    } else if (b[j] < a[i]) {
      ++j;
    } else {
      ++common;
      ++i;
      ++j;
    }
  }
  return common;
}

IndexerRecallResult run_indexer_recall(const ParameterBuffer& params, const Model* inference,
                                       std::span<const int32_t> tokens,
                                       const IndexerRecallConfig& config, ThreadPool& pool,
                                       const RecallProgress& progress) {
  const ModelConfig& m = params.layout().config();
  const int64_t T = config.context, k = m.index_topk;
  if (!m.has_indexer()) fail("indexer recall: the model has no lightning indexer");
  if (T <= k || T > m.max_position_embeddings) {
    fail(
        "indexer recall: the context {} must be in ({}, {}]: above index_topk, so that rows have "
        "more keys than it selects, and within max_position_embeddings",
        T, k, m.max_position_embeddings);
  }
  if (config.chunk < 1) fail("indexer recall: the prefill chunk must be at least 1");
  if (inference) {
    const ModelConfig& i = inference->config();
    if (i.num_hidden_layers != m.num_hidden_layers || i.index_topk != k ||
        i.hidden_size != m.hidden_size || i.vocab_size != m.vocab_size) {
      fail("indexer recall: the inference model's config differs from the parameters'");
    }
  }
  int64_t windows = int64_t(tokens.size()) / T;
  if (windows < 1) {
    fail("indexer recall: {} tokens do not fill one window of {}", tokens.size(), T);
  }
  if (config.max_windows > 0) windows = std::min(windows, config.max_windows);

  IndexerRecallResult result;
  result.windows = windows;
  result.rows_per_window = T - k;
  result.layers.resize(size_t(m.num_hidden_layers));
  for (int64_t w = 0; w < windows; ++w) {
    std::vector<int32_t> window(tokens.begin() + w * T, tokens.begin() + (w + 1) * T);
    if (config.bos) window[0] = *config.bos;
    const TrainBatch batch{.tokens = window, .sequences = 1, .seq_len = T, .targets = {}};

    TrainStepOptions dense;
    dense.attention = AttentionMode::kDense;
    dense.lm_loss = false;
    dense.record_indexer_recall = true;
    const TrainStepResult recall = train_step(params, batch, dense, nullptr, pool);
    std::vector<std::vector<int32_t>> fp32_topk, fp8_topk;
    if (inference) {
      TrainStepOptions sparse;
      sparse.attention = AttentionMode::kSparse;
      sparse.lm_loss = false;
      sparse.record_topk = true;
      fp32_topk = train_step(params, batch, sparse, nullptr, pool).topk;
      fp8_topk = inference_topk(*inference, window, config.chunk, pool);
    }
    for (size_t l = 0; l < result.layers.size(); ++l) {
      LayerIndexerRecall& layer = result.layers[l];
      for (int64_t t = k; t < T; ++t) {  // rows with t + 1 > k keys
        layer.recall.add(recall.indexer_recall[l][size_t(t)]);
        layer.oracle.add(recall.indexer_oracle_recall[l][size_t(t)]);
        layer.chance.add(double(k) / double(t + 1));
        if (!inference) continue;
        DSA_CHECK(fp32_topk[l].size() == size_t(T * k) && fp8_topk[l].size() == size_t(T * k),
                  "layer {}: top-k of {} and {} entries for {} rows of {}", l, fp32_topk[l].size(),
                  fp8_topk[l].size(), T, k);
        const std::span<const int32_t> a(fp32_topk[l].data() + t * k, size_t(k));
        const std::span<const int32_t> b(fp8_topk[l].data() + t * k, size_t(k));
        layer.overlap.add(double(count_common_keys(a, b)) / double(k));
      }
    }
    if (progress) progress(w + 1, windows);
  }
  return result;
}

}  // namespace dsa::eval
