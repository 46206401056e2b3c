#include "embedded_model.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <system_error>

#include "core/error.h"
#include "core/safetensors_writer.h"

// The bytes, placed by the assembler (DSA_EMBEDDED_MODEL_DIR is set by apps/CMakeLists.txt when
// the build embeds a model). Each file gets a begin and an end symbol in .rodata.
#ifndef DSA_EMBEDDED_MODEL_HASH
#define DSA_EMBEDDED_MODEL_HASH ""  // no built-in model: embedded_model_dir() fails first
#endif

#ifdef DSA_EMBEDDED_MODEL_DIR
#define DSA_INCBIN(symbol, file)                                                       \
  __asm__(".section .rodata\n.balign 64\n.global " #symbol "_begin\n" #symbol          \
          "_begin:\n.incbin \"" DSA_EMBEDDED_MODEL_DIR "/" file "\"\n.global " #symbol \
          "_end\n" #symbol "_end:\n.byte 0\n.previous\n");                             \
  extern "C" const std::byte symbol##_begin[];                                         \
  extern "C" const std::byte symbol##_end[];
DSA_INCBIN(dsa_embedded_config, "config.json")
DSA_INCBIN(dsa_embedded_weights, "model.safetensors")
DSA_INCBIN(dsa_embedded_tokenizer, "tokenizer.json")
#endif

namespace dsa::cli {
namespace fs = std::filesystem;
namespace {

fs::path cache_root() {
  if (const char* dir = std::getenv("DSA_CACHE_DIR"); dir && *dir) return dir;
  if (const char* dir = std::getenv("XDG_CACHE_HOME"); dir && *dir) return fs::path(dir) / "dsa";
  if (const char* home = std::getenv("HOME"); home && *home) {
    return fs::path(home) / ".cache" / "dsa";
  }
  fail(
      "no -m given, and there is no cache folder to unpack the built-in model into (set "
      "DSA_CACHE_DIR, XDG_CACHE_HOME or HOME, or pass -m DIR)");
}

bool complete(const fs::path& dir, const std::vector<EmbeddedFile>& files) {
  for (const EmbeddedFile& f : files) {
    std::error_code error;
    if (fs::file_size(dir / f.name, error) != f.bytes.size() || error) return false;
  }
  return true;
}

// Written durably (temp file, fsync, rename: core's atomic write), so a crash never leaves a
// file of the right size with the wrong bytes.
void write_file(const fs::path& path, std::span<const std::byte> bytes) {
  try {
    write_file_atomically(
        path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  } catch (const Error& e) {
    fail("{} (pass -m DIR to use a model folder instead)", e.what());
  }
}

}  // namespace

std::vector<EmbeddedFile> embedded_model_files() {
#ifdef DSA_EMBEDDED_MODEL_DIR
  const auto span = [](const std::byte* begin, const std::byte* end) {
    return std::span<const std::byte>(begin, size_t(end - begin));
  };
  return {{"config.json", span(dsa_embedded_config_begin, dsa_embedded_config_end)},
          {"model.safetensors", span(dsa_embedded_weights_begin, dsa_embedded_weights_end)},
          {"tokenizer.json", span(dsa_embedded_tokenizer_begin, dsa_embedded_tokenizer_end)}};
#else
  return {};
#endif
}

std::string embedded_model_name() { return "dsa-small"; }

fs::path embedded_model_dir() {
  const std::vector<EmbeddedFile> files = embedded_model_files();
  if (files.empty()) {
    fail(
        "no -m given, and this dsa was built without a built-in model (DSA_EMBED_MODEL=OFF or "
        "no assets/dsa-small): pass -m DIR");
  }
  // The version is the files' SHA-256, computed once when the build was configured.
  const fs::path dir = cache_root() / "models" /
                       fmt::format("{}-{}", embedded_model_name(), DSA_EMBEDDED_MODEL_HASH);
  if (complete(dir, files)) return dir;

  // Unpack beside the final folder and rename it into place: a reader never sees half a model.
  std::error_code error;
  fs::create_directories(dir.parent_path(), error);
  if (error) {
    fail("cannot create {} for the built-in model: {} (pass -m DIR instead)",
         dir.parent_path().string(), error.message());
  }
  const fs::path temp = fs::path(dir.string() + fmt::format(".tmp.{}", ::getpid()));
  fs::remove_all(temp, error);
  fs::create_directories(temp, error);
  if (error) fail("cannot create {}: {}", temp.string(), error.message());
  try {
    for (const EmbeddedFile& f : files) write_file(temp / f.name, f.bytes);
  } catch (...) {
    fs::remove_all(temp, error);
    throw;
  }
  if (complete(dir, files)) {  // a concurrent first run got there first: use its copy
    fs::remove_all(temp, error);
    return dir;
  }
  fs::remove_all(dir, error);  // a damaged copy (a file of the wrong size)
  fs::rename(temp, dir, error);
  if (error) {
    fs::remove_all(temp, error);
    if (!complete(dir, files)) {  // not a concurrent first run that got there first
      fail("cannot move the built-in model into {} (pass -m DIR instead)", dir.string());
    }
  }
  return dir;
}

std::string model_dir_or_embedded(const std::string& model_dir) {
  return model_dir.empty() ? embedded_model_dir().string() : model_dir;
}

}  // namespace dsa::cli
