#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "commands.h"
#include "core/error.h"
#include "core/version.h"

int main(int argc, char** argv) {
  CLI::App app{"dsa: DeepSeek-V3.2 and DeepSeek Sparse Attention engine"};
  app.set_version_flag("--version", std::string(dsa::kVersion));
  app.require_subcommand(1);
  dsa::cli::register_info(app);
  dsa::cli::register_tokenize(app);
  dsa::cli::register_tokenizer(app);
  dsa::cli::register_init_model(app);
  dsa::cli::register_inspect(app);
  dsa::cli::register_chat_template(app);
  dsa::cli::register_bench(app);
  dsa::cli::register_logits(app);
  dsa::cli::register_generate(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const dsa::Error& e) {
    fmt::print(stderr, "dsa: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "dsa: internal error: {}\n", e.what());
    return 2;
  }
  return 0;
}
