#include <fmt/format.h>
#include <malloc.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/printable.h"
#include "core/version.h"

int main(int argc, char** argv) {
  // The forward pass allocates and frees activation buffers of many megabytes per call. By
  // default glibc serves those with mmap and returns them (or trims the heap) on free, so every
  // call faults its pages in again and timings depend on allocation history. Keep freed memory
  // in the process: blocks up to glibc's 32 MiB limit come from the heap, which is not trimmed.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"dsa: DeepSeek-V3.2 and DeepSeek Sparse Attention engine"};
  app.set_version_flag("--version", std::string(dsa::kVersion));
  app.require_subcommand(1);
  dsa::cli::register_info(app);
  dsa::cli::register_tokenize(app);
  dsa::cli::register_tokenizer(app);
  dsa::cli::register_init_model(app);
  dsa::cli::register_convert(app);
  dsa::cli::register_inspect(app);
  dsa::cli::register_chat_template(app);
  dsa::cli::register_bench(app);
  dsa::cli::register_logits(app);
  dsa::cli::register_generate(app);
  dsa::cli::register_run(app);
  dsa::cli::register_chat(app);
  dsa::cli::register_serve(app);
  dsa::cli::register_perplexity(app);
  dsa::cli::register_demo(app);
  dsa::cli::register_data(app);
  dsa::cli::register_grad(app);
  dsa::cli::register_train(app);
  dsa::cli::register_eval(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a bad flag or value is a user error like any other: status 1
    // (CLI11's own codes, 100 and up, would mean nothing to scripts).
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const dsa::Error& e) {
    // Messages escape what they quote from files; printable() again is the last line of defence,
    // so that no control byte or invalid UTF-8 reaches the terminal (or a log parsed as UTF-8).
    fmt::print(stderr, "dsa: error: {}\n", dsa::printable(e.what()));
    return 1;
  } catch (const nlohmann::json::exception& e) {
    // Input JSON goes through parse_json_strict, whose errors are dsa::Error; one of nlohmann's own
    // can only come from a value of an unexpected type read without a check, which is still the
    // input's fault rather than a broken invariant.
    fmt::print(stderr, "dsa: error: unexpected JSON content: {}\n", dsa::printable(e.what()));
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "dsa: error: out of memory (the input or the model is too large)\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "dsa: internal error: {}\n", dsa::printable(e.what()));
    return 2;
  }
  return 0;
}
