// Each subcommand of `dsa` lives in its own cmd_<name>.cc and is added to the app by one
// register function, called from main.cc. A command's callback throws dsa::Error for user
// errors; main prints them as "dsa: error: ..." and exits with status 1.
#pragma once

#include <CLI/CLI.hpp>

namespace dsa::cli {

void register_info(CLI::App& app);

}  // namespace dsa::cli
