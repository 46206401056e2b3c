// `dsa inspect DIR`: what a checkpoint is. Config summary, tensors (grouped by name pattern, or
// all with --tensors), parameters by module, weight memory by dtype, KV-cache bytes per token and
// at a context length, and a check that the tensors match what config.json implies: any missing,
// unexpected, reshaped or retyped tensor is listed and the command exits with status 1.
// A folder with only config.json (e.g. from `init-model --dry-run`) is described from the layout.
#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <unordered_map>

#include "commands.h"
#include "core/checked_math.h"
#include "core/decimal_index.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "model/config.h"
#include "model/tensor_layout.h"

namespace dsa::cli {
namespace fs = std::filesystem;
using nlohmann::json;
namespace {

struct InspectOptions {
  std::string path;
  bool json = false;
  bool all_tensors = false;
  int64_t context = 0;  // 0: max_position_embeddings
};

struct TensorRow {
  std::string name;  // a full name, or a pattern with * for the layer and expert indices
  DType dtype;
  Shape shape;
  int64_t count = 1;
  uint64_t bytes = 0;
  std::set<int64_t> layers;  // the layer indices a pattern covers
};

// "model.layers.12.mlp.experts.7.up_proj.weight" -> "model.layers.*.mlp.experts.*.up_proj.weight",
// with the layer index returned in `layer` (-1 if none).
std::string name_pattern(const std::string& name, int64_t& layer) {
  layer = -1;
  std::string pattern;
  size_t pos = 0;
  while (pos < name.size()) {
    const size_t dot = name.find('.', pos);
    std::string part = name.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    const bool numeric = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    // An index too large for int64 (only a hostile header has one) is not a layer: the tensor
    // is then reported as unexpected, like any other name the layout does not know.
    if (numeric && pattern.ends_with("layers.")) layer = parse_decimal_index(part).value_or(-1);
    pattern += numeric ? "*" : part;
    if (dot == std::string::npos) break;
    pattern += '.';
    pos = dot + 1;
  }
  return pattern;
}

// {0, 1, 2, 5} -> "0-2, 5"
std::string layer_ranges(const std::set<int64_t>& layers) {
  std::string text;
  for (auto it = layers.begin(); it != layers.end();) {
    const int64_t first = *it;
    int64_t last = first;
    while (++it != layers.end() && *it == last + 1) last = *it;
    if (!text.empty()) text += ", ";
    text += first == last ? std::to_string(first) : fmt::format("{}-{}", first, last);
  }
  return text;
}

// One tensor of the listing, pointing at its name and shape where they already live (the
// layout, the checkpoint's index, the mismatch list): a header of 100,000 tensors then costs
// 32 bytes each here instead of a copy of every name and shape.
struct TensorRef {
  const std::string* name;
  DType dtype;
  const Shape* shape;
  uint64_t bytes;
};

std::vector<TensorRow> tensor_rows(const std::vector<TensorRef>& tensors, bool grouped) {
  if (!grouped) {
    std::vector<TensorRow> rows;
    rows.reserve(tensors.size());
    for (const TensorRef& t : tensors) rows.push_back({*t.name, t.dtype, *t.shape, 1, t.bytes, {}});
    return rows;
  }
  // Two passes, so that the rows are allocated once at their final count (a header of 100,000
  // unrelated names makes 100,000 rows; growing the vector would hold two copies at a time).
  std::unordered_map<std::string, size_t> index;  // pattern + dtype + shape -> row
  const auto key_of = [](const TensorRef& tensor, std::string& pattern, int64_t& layer) {
    pattern = name_pattern(*tensor.name, layer);
    return pattern + " " + std::string(dtype_name(tensor.dtype)) + tensor.shape->to_string();
  };
  std::string pattern;
  int64_t layer;
  for (const TensorRef& tensor : tensors)
    index.emplace(key_of(tensor, pattern, layer), index.size());
  std::vector<TensorRow> rows(index.size());
  std::vector<bool> started(index.size(), false);
  for (const TensorRef& tensor : tensors) {
    const size_t at = index.at(key_of(tensor, pattern, layer));
    TensorRow& row = rows[at];
    if (!started[at]) {
      row = {pattern, tensor.dtype, *tensor.shape, 0, 0, {}};
      started[at] = true;
    }
    ++row.count;
    row.bytes += tensor.bytes;
    if (layer >= 0) row.layers.insert(layer);
  }
  return rows;
}

std::string summary_text(const ModelConfig& c) {
  const int64_t dense = c.first_k_dense_replace;
  std::string text = fmt::format("architecture  {} ({})\n", architecture_name(c.architecture),
                                 model_type_name(c.architecture));
  text += fmt::format("layers        {} ({} dense + {} MoE) + {} MTP\n", c.num_hidden_layers, dense,
                      c.num_hidden_layers - dense, c.num_nextn_predict_layers);
  text += fmt::format("hidden        {}, vocab {}, max positions {}\n", c.hidden_size, c.vocab_size,
                      c.max_position_embeddings);
  text += fmt::format(
      "attention     MLA, {} heads, q_lora_rank {}, kv_lora_rank {}, qk {} + {} rope, v {}\n",
      c.num_attention_heads, c.has_q_lora() ? std::to_string(c.q_lora_rank) : "none",
      c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim);
  text += c.has_indexer() ? fmt::format("indexer       {} heads x {}, top-k {}\n", c.index_n_heads,
                                        c.index_head_dim, c.index_topk)
                          : "indexer       none (dense attention)\n";
  text += fmt::format(
      "experts       {} routed x {} ({} per token, {} groups, {} kept, scale {}) + {} shared; "
      "dense FFN {}\n",
      c.n_routed_experts, c.moe_intermediate_size, c.num_experts_per_tok, c.n_group, c.topk_group,
      c.routed_scaling_factor, c.n_shared_experts, c.intermediate_size);
  text += fmt::format("rope          theta {}", c.rope_theta);
  if (c.rope_scaling) {
    const RopeScaling& r = *c.rope_scaling;
    text += fmt::format(", YaRN factor {} (original {}, beta {}/{}, mscale {}/{})", r.factor,
                        r.original_max_position_embeddings, r.beta_fast, r.beta_slow, r.mscale,
                        r.mscale_all_dim);
  }
  text += "\n";
  text += c.fp8() ? fmt::format(
                        "weights       fp8 e4m3, 128x128 blocks, activation scales {}\n",
                        c.quantization->scale_fmt.empty() ? "amax/448" : c.quantization->scale_fmt)
                  : "weights       bf16\n";
  return text;
}

void run_inspect(const InspectOptions& options) {
  const fs::path path(options.path);
  const ModelConfig config = load_model_config(path);
  const std::vector<ParameterSpec> parameters = model_parameters(config);
  const std::vector<CheckpointTensor> expected = checkpoint_tensors(parameters);

  // The checkpoint, if the folder has weights; otherwise describe the layout alone.
  std::optional<Checkpoint> checkpoint;
  if (fs::is_directory(path) && (fs::exists(path / "model.safetensors") ||
                                 fs::exists(path / "model.safetensors.index.json"))) {
    checkpoint.emplace(path);
  }
  std::vector<TensorRef> tensors;
  tensors.reserve(expected.size() + (checkpoint ? checkpoint->tensor_count() : 0));
  std::vector<LayoutMismatch> mismatches;
  // Tensors in layout order (the checkpoint's own when it has weights), then any unexpected ones.
  for (const CheckpointTensor& t : expected) {
    if (!checkpoint) {
      tensors.push_back({&t.name, t.dtype, &t.shape, t.nbytes()});
    } else if (checkpoint->contains(t.name)) {
      const TensorInfo& info = checkpoint->info(t.name);
      tensors.push_back({&t.name, info.dtype, &info.shape, info.nbytes()});
    }
  }
  if (checkpoint) {
    mismatches = compare_with_checkpoint(expected, *checkpoint);
    for (const LayoutMismatch& m : mismatches) {
      if (m.kind != LayoutMismatch::Kind::kUnexpected) continue;
      const TensorInfo& info = checkpoint->info(m.name);
      tensors.push_back({&m.name, info.dtype, &info.shape, info.nbytes()});
    }
  }
  std::map<std::string, uint64_t> bytes_by_dtype;
  uint64_t total_bytes = 0;
  for (const TensorRef& t : tensors) {
    bytes_by_dtype[std::string(dtype_name(t.dtype))] += t.bytes;
    total_bytes += t.bytes;
  }
  const ParameterCounts counts = count_parameters(config);
  const KvCacheBytes kv = kv_cache_bytes_per_token(config);
  const int64_t context = options.context > 0 ? options.context : config.max_position_embeddings;
  // Config validation bounds the KV cache at max_position_embeddings, not at any -c.
  const int64_t kv_per_token = kv.per_layer() * config.num_hidden_layers;
  const std::optional<int64_t> kv_at_context = checked_mul(kv_per_token, context);
  if (!kv_at_context) {
    fail(
        "-c {}: the KV cache at that many tokens ({} bytes each) does not fit in 64-bit byte "
        "counts",
        context, kv_per_token);
  }
  const std::vector<TensorRow> rows = tensor_rows(tensors, !options.all_tensors);

  if (options.json) {
    json out;
    out["path"] = path.string();
    out["weights_present"] = checkpoint.has_value();
    out["config"] = model_config_to_json(config);
    json by_module = json::object();
    for (int m = 0; m < kModuleCount; ++m) {
      by_module[std::string(module_name(Module(m)))] = counts.by_module[m];
    }
    out["parameters"] = {{"by_module", by_module},
                         {"main_model", counts.main_model},
                         {"mtp", counts.mtp},
                         {"total", counts.total()},
                         {"activated_per_token", counts.activated_per_token}};
    json weight_bytes(bytes_by_dtype);
    weight_bytes["total"] = total_bytes;
    out["weight_bytes"] = weight_bytes;
    out["kv_cache"] = {{"latent_bytes_per_token_layer", kv.latent},
                       {"indexer_bytes_per_token_layer", kv.indexer},
                       {"layers", config.num_hidden_layers},
                       {"bytes_per_token", kv_per_token},
                       {"context", context},
                       {"bytes_at_context", *kv_at_context}};
    json table = json::array();
    for (const TensorRow& row : rows) {
      table.push_back(
          {{"name", row.name},
           {"dtype", dtype_name(row.dtype)},
           {"shape", std::vector<int64_t>(row.shape.dims().begin(), row.shape.dims().end())},
           {"count", row.count},
           {"bytes", row.bytes}});
    }
    out["tensors"] = table;
    json problems = json::array();
    for (const LayoutMismatch& m : mismatches) problems.push_back(m.describe());
    out["mismatches"] = problems;
    fmt::print("{}\n", out.dump(2));
  } else {
    fmt::print("{}\n{}", path.string(), summary_text(config));
    fmt::print("\ntensors ({}{})\n", format_count(tensors.size()),
               options.all_tensors ? "" : ", grouped by name; --tensors lists each");
    fmt::print("  {:<64} {:<8} {:<14} {:>7} {:>11}  {}\n", "name", "dtype", "shape", "count",
               "bytes", options.all_tensors ? "" : "layers");
    for (const TensorRow& row : rows) {
      fmt::print("  {:<64} {:<8} {:<14} {:>7} {:>11}  {}\n", row.name, dtype_name(row.dtype),
                 row.shape.to_string(), row.count, format_bytes(row.bytes),
                 layer_ranges(row.layers));
    }
    fmt::print("\nparameters\n");
    for (int m = 0; m < kModuleCount; ++m) {
      if (counts.by_module[m] == 0) continue;  // e.g. no indexer in V3; MTP parts counted below
      fmt::print("  {:<16} {:>20}\n", module_name(Module(m)), format_count(counts.by_module[m]));
    }
    fmt::print("  {:<16} {:>20}\n  {:<16} {:>20}\n  {:<16} {:>20}\n  {:<16} {:>20}\n", "main model",
               format_count(counts.main_model), "mtp", format_count(counts.mtp), "total",
               format_count(counts.total()), "activated/token",
               format_count(counts.activated_per_token));
    fmt::print("\nweight memory{}\n", checkpoint ? "" : " (layout only: no weights in the folder)");
    for (const auto& [dtype, bytes] : bytes_by_dtype) {
      fmt::print("  {:<8} {:>12}  ({} B)\n", dtype, format_bytes(bytes), format_count(bytes));
    }
    fmt::print("  {:<8} {:>12}  ({} B)\n", "total", format_bytes(total_bytes),
               format_count(total_bytes));
    fmt::print("\nkv cache (FP8 latent {} B{} per token and layer, {} layers)\n", kv.latent,
               kv.indexer ? fmt::format(" + indexer keys {} B", kv.indexer) : "",
               config.num_hidden_layers);
    fmt::print("  {:<18} {} B\n  {:<18} {}\n", "per token", format_count(kv_per_token),
               fmt::format("at {} tokens", format_count(context)),
               format_bytes(uint64_t(*kv_at_context)));
    if (checkpoint) {
      fmt::print("\ncheck: {}\n", mismatches.empty()
                                      ? "every tensor matches config.json"
                                      : fmt::format("{} problem(s)", mismatches.size()));
      for (const LayoutMismatch& m : mismatches) fmt::print("  {}\n", m.describe());
    }
  }
  if (!mismatches.empty()) {
    fail("{}: the checkpoint does not match its config.json: {} problem(s), first: {}",
         path.string(), mismatches.size(), mismatches.front().describe());
  }
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  auto* cmd =
      app.add_subcommand("inspect", "Describe a checkpoint and check it against its config");
  cmd->add_option("path", options->path, "Checkpoint folder (or a config.json)")->required();
  cmd->add_flag("--json", options->json, "Print one JSON object");
  cmd->add_flag("--tensors", options->all_tensors, "List every tensor instead of groups");
  cmd->add_option("-c,--ctx", options->context,
                  "Context length for the KV-cache size (default: max_position_embeddings)")
      ->check(CLI::PositiveNumber);
  cmd->callback([options] { run_inspect(*options); });
}

}  // namespace dsa::cli
