#include "demo_sample.h"

#include <fmt/format.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include "embedded_model.h"
#include "model/forward.h"
#include "model/tensor_layout.h"
#include "runtime/generator.h"
#include "runtime/sampler.h"
#include "text/tokenizer.h"

namespace dsa::cli {

void print_builtin_model_sample(ThreadPool& pool) {
  if (embedded_model_files().empty()) {
    fmt::print("(this dsa was built without its built-in model, so there is no sample text)\n\n");
    return;
  }
  const auto dir = embedded_model_dir();
  const text::Tokenizer tokenizer = text::Tokenizer::from_model_dir(dir);
  const std::unique_ptr<Model> model = Model::load(dir, pool);
  constexpr const char* kPrompt = "In the beginning";
  fmt::print(
      "The built-in model {} ({:.1f} M parameters, trained by this engine: docs/model-card.md)\n"
      "continues \"{}\" with sparse attention (temperature 0.8, seed 1):\n\n{}",
      embedded_model_name(), double(count_parameters(model->config()).main_model) / 1e6, kPrompt,
      kPrompt);
  std::fflush(stdout);
  Generator generator(*model, tokenizer, 256, pool);
  SamplerParams sampling;
  sampling.seed = 1;
  Sampler sampler(sampling);
  GenerationParams params;
  params.max_tokens = 48;
  params.forward.attention = AttentionMode::kSparse;
  GenerationCallbacks callbacks;
  callbacks.on_text = [](std::string_view text) {
    fmt::print("{}", text);
    std::fflush(stdout);
  };
  std::vector<int32_t> prompt = tokenizer.encode(kPrompt, /*allow_special=*/false);
  if (const std::optional<int32_t> bos = tokenizer.bos_id()) prompt.insert(prompt.begin(), *bos);
  const GenerationStats stats = generator.generate(prompt, sampler, params, callbacks);
  fmt::print("\n\n{}\n\n", format_stats(stats));
}

}  // namespace dsa::cli
