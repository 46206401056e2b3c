// Training checkpoints. A run's output folder is a Hugging Face model folder that `dsa run`,
// `dsa chat` and `dsa bench` load as it is (config.json, model.safetensors in bf16,
// tokenizer.json), plus trainer/ with what resuming needs:
//
//   trainer/state.json                   step, data position, optimizer step count, log offset,
//                                        the run's settings; the commit point
//   trainer/optimizer-<step>.safetensors fp32 master weights ("param.<name>") and AdamW moments
//                                        ("exp_avg.<name>", "exp_avg_sq.<name>")
//
// Every file is written atomically (temporary file, fsync, rename), in this order: the optimizer
// file (a new name), then state.json, which names it: the commit point. Only then are older
// optimizer files removed and the model folder's files replaced. So a run killed at any moment
// resumes from the last checkpoint whose state.json landed, and a save that fails before that
// (a full disk fails on the optimizer file, the largest) leaves the previous checkpoint exactly
// as it was. After a kill or failure between the two, the model files lag state.json by one
// checkpoint until the next save. Temporary files a killed run left are removed by the next save.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "model/train_parameters.h"
#include "train/adamw.h"

namespace dsa::train {

struct TrainerState {
  int64_t step = 0;             // optimizer steps completed
  uint64_t data_position = 0;   // batches the sampler has drawn
  uint64_t log_bytes = 0;       // length of the --log file at this step (truncated on resume)
  int64_t tokens_seen = 0;      // training tokens consumed so far
  double elapsed_s = 0.0;       // training wall time so far
  nlohmann::json settings;      // the run's flags, for the resume checks and the record
  std::string optimizer_file;   // file name under trainer/ (set by save_checkpoint)
  int64_t optimizer_steps = 0;  // AdamW steps taken, as read back (saved from the optimizer)
};

// Writes the whole checkpoint into `dir` (created if needed); `tokenizer` (optional) is copied as
// tokenizer.json. A failure is a dsa::Error that says what the folder still holds.
void save_checkpoint(const std::filesystem::path& dir, const ParameterBuffer& params,
                     const AdamW& optimizer, TrainerState state,
                     const std::optional<std::filesystem::path>& tokenizer);

// Whether `dir` holds a resumable checkpoint (trainer/state.json).
bool has_checkpoint(const std::filesystem::path& dir);

struct ResumedCheckpoint {
  TrainerState state;
  ParameterBuffer params;  // fp32 masters
};

// Reads trainer/state.json alone (its settings can be checked before any tensor is read).
TrainerState read_checkpoint_state(const std::filesystem::path& dir);

// Reads trainer/state.json and its optimizer file into `optimizer` (moments and step count) and
// the returned parameters. The optimizer file must hold exactly the tensors of `layout` with the
// same shapes; any difference is a dsa::Error naming it.
ResumedCheckpoint load_checkpoint(const std::filesystem::path& dir,
                                  std::shared_ptr<const ParameterLayout> layout, AdamW& optimizer);

}  // namespace dsa::train
