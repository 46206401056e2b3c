// Training checkpoints. A run's output folder is a Hugging Face model folder that `dsa run`,
// `dsa chat` and `dsa bench` load as it is (config.json, model.safetensors in bf16,
// tokenizer.json), plus trainer/ with what resuming needs:
//
//   trainer/state.json                   step, data position, optimizer step count, log offset,
//                                        the run's settings; written last: the commit point
//   trainer/optimizer-<step>.safetensors fp32 master weights ("param.<name>") and AdamW moments
//                                        ("exp_avg.<name>", "exp_avg_sq.<name>")
//
// Every file is written atomically (temporary file, fsync, rename). state.json names the
// optimizer file it belongs to and is replaced only after that file is complete, so a run killed
// at any moment resumes from the last checkpoint whose state.json landed; older optimizer files
// are removed only after the new state.json is in place.
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
  int64_t step = 0;            // optimizer steps completed
  uint64_t data_position = 0;  // batches the sampler has drawn
  uint64_t log_bytes = 0;      // length of the --log file at this step (truncated on resume)
  int64_t tokens_seen = 0;     // training tokens consumed so far
  double elapsed_s = 0.0;      // training wall time so far
  nlohmann::json settings;     // the run's flags, for the resume checks and the record
  std::string optimizer_file;  // file name under trainer/
};

// Writes the whole checkpoint into `dir` (created if needed). `config` must describe exactly
// the parameters' layout. `tokenizer` (optional) is copied as tokenizer.json.
void save_checkpoint(const std::filesystem::path& dir, const ParameterBuffer& params,
                     const AdamW& optimizer, TrainerState state,
                     const std::optional<std::filesystem::path>& tokenizer);

// Whether `dir` holds a resumable checkpoint (trainer/state.json).
bool has_checkpoint(const std::filesystem::path& dir);

struct ResumedCheckpoint {
  TrainerState state;
  ParameterBuffer params;  // fp32 masters
};

// Reads trainer/state.json and its optimizer file into `optimizer` (moments and step count) and
// the returned parameters. The optimizer file must hold exactly the tensors of `layout` with the
// same shapes; any difference is a dsa::Error naming it.
ResumedCheckpoint load_checkpoint(const std::filesystem::path& dir,
                                  std::shared_ptr<const ParameterLayout> layout, AdamW& optimizer);

}  // namespace dsa::train
