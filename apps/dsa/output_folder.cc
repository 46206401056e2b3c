#include "output_folder.h"

#include <string>
#include <system_error>

#include "core/error.h"

namespace dsa::cli {
namespace fs = std::filesystem;

void prepare_output(const fs::path& dir, bool force) {
  std::error_code error;
  if (fs::exists(dir) && !fs::is_directory(dir))
    fail("{}: exists and is not a folder", dir.string());
  if (fs::exists(dir) && !fs::is_empty(dir)) {
    if (!force) fail("{}: folder is not empty (use --force to overwrite)", dir.string());
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      const bool checkpoint_file =
          name.starts_with("model") &&
          (name.ends_with(".safetensors") || name == "model.safetensors.index.json");
      if (!checkpoint_file) continue;
      fs::remove(entry.path(), error);
      if (error) fail("{}: cannot remove: {}", entry.path().string(), error.message());
    }
  }
  fs::create_directories(dir, error);
  if (error) fail("{}: cannot create the folder: {}", dir.string(), error.message());
}

}  // namespace dsa::cli
