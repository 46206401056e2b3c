// The model built into the dsa binary: what `dsa run` and `dsa chat` run when -m is not given.
// The build embeds the folder assets/dsa-small (config.json,
// model.safetensors, tokenizer.json: the model trained by scripts/dsa_recipe.sh,
// docs/model-card.md) with the assembler's .incbin, and the first use writes it out as a plain
// Hugging Face folder in the user's cache, so it loads exactly like any other model (memory-mapped,
// shared by processes).
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace dsa::cli {

struct EmbeddedFile {
  std::string name;  // e.g. "config.json"
  std::span<const std::byte> bytes;
};

// The embedded files; empty when the binary was built without a model (DSA_EMBED_MODEL=OFF or no
// assets/dsa-small at configure time).
std::vector<EmbeddedFile> embedded_model_files();
std::string embedded_model_name();  // "dsa-small"

// The folder the commands load: $DSA_CACHE_DIR, else $XDG_CACHE_HOME/dsa, else $HOME/.cache/dsa,
// then models/<name>-<16 hex digits of the files' SHA-256, taken when the build was configured>.
// Written on first use (into a temporary folder renamed into place, so a crash or a concurrent
// first run never leaves a partial model) and reused while every file has the embedded size. Throws
// dsa::Error when the binary has no embedded model or the cache cannot be written, saying how to
// pass -m instead.
std::filesystem::path embedded_model_dir();

// `model_dir` when given, else embedded_model_dir(): what -m defaults to.
std::string model_dir_or_embedded(const std::string& model_dir);

}  // namespace dsa::cli
