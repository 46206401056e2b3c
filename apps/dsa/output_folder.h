// The output folder of commands that write a checkpoint (init-model, convert).
#pragma once

#include <filesystem>

namespace dsa::cli {

// A folder we may write a checkpoint into: absent (created) or empty, or anything with `force`.
// With `force`, the checkpoint files of an earlier write are removed so no stale shard or index
// survives. Throws dsa::Error otherwise.
void prepare_output(const std::filesystem::path& dir, bool force);

}  // namespace dsa::cli
