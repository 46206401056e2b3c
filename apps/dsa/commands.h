// Each subcommand of `dsa` lives in its own cmd_<name>.cc and is added to the app by one
// register function, called from main.cc. A command's callback throws dsa::Error for user
// errors; main prints them as "dsa: error: ..." and exits with status 1.
#pragma once

#include <CLI/CLI.hpp>

namespace dsa::cli {

void register_info(CLI::App& app);
void register_tokenize(CLI::App& app);   // tokenize, detokenize
void register_tokenizer(CLI::App& app);  // tokenizer train
void register_init_model(CLI::App& app);
void register_convert(CLI::App& app);
void register_inspect(CLI::App& app);
void register_chat_template(CLI::App& app);
void register_bench(CLI::App& app);  // bench attention
void register_logits(CLI::App& app);
void register_generate(CLI::App& app);
void register_run(CLI::App& app);
void register_chat(CLI::App& app);
void register_serve(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_demo(CLI::App& app);
void register_data(CLI::App& app);  // data build
void register_grad(CLI::App& app);
void register_train(CLI::App& app);
void register_eval(CLI::App& app);

}  // namespace dsa::cli
