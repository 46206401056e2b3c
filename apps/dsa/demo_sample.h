// The part of `dsa demo` that shows the built-in model (embedded_model.h) writing: it continues a
// fixed prompt with sparse (DSA) attention, seeded, so every run prints the same text.
#pragma once

#include "core/thread_pool.h"

namespace dsa::cli {

// Prints the built-in model's continuation and the timing line, or one line saying this build
// has no built-in model.
void print_builtin_model_sample(ThreadPool& pool);

}  // namespace dsa::cli
