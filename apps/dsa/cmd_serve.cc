// `dsa serve`: an OpenAI-compatible HTTP server (docs/server.md).
//
//   dsa serve [-m DIR] [--host 127.0.0.1] [--port 8080] [-c CTX] [--parallel N] [-t N]
//             [--api-key KEY] [--alias NAME] [--queue N] [-b N] [--max-body BYTES] [--timeout S]
//
// The socket listens before the model loads, so /health answers 503 while it loads and 200
// after, as llama-server does. Up to --parallel requests are generated at once, with continuous
// batching: one forward step runs a token of each (src/server/engine.h). SIGINT or SIGTERM
// stops the server: queued and running requests end with an error, then the connections close.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include "commands.h"
#include "core/error.h"
#include "embedded_model.h"
#include "generation_options.h"
#include "server/api_error.h"
#include "server/api_server.h"
#include "server/engine.h"
#include "server/http_server.h"
#include "server/metrics.h"

namespace dsa::cli {
namespace {

struct ServeOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int port = 8080;
  int64_t context = 0;
  int parallel = 4;
  int threads = 0;
  int64_t batch = 512;
  std::string api_key;
  std::string alias;
  int queue = 16;
  size_t max_body = size_t(8) << 20;
  int timeout = 10;
  bool no_prefix_cache = false;
  std::string kv_memory = "0.5";
};

// SIGINT and SIGTERM write their number into this pipe; a thread of the server reads it and stops
// the server. Libraries start threads of their own (OpenBLAS does at load time) where the signals
// are not blocked, so a handler (which may run on any thread) is what catches them reliably, and
// writing to a pipe is what a handler may safely do.
int stop_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = write(stop_pipe[1], &byte, 1);
}

void install_stop_handlers() {
  if (pipe(stop_pipe) != 0) fail("cannot create a pipe for the signal handlers");
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that resets its connection must not kill the server
}

// Blocks until a stop signal (or wake_stop_waiter); returns the signal number (0: woken).
int wait_for_stop() {
  unsigned char byte = 0;
  while (read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
  }
  return byte;
}

void wake_stop_waiter() {
  const unsigned char byte = 0;
  [[maybe_unused]] const ssize_t n = write(stop_pipe[1], &byte, 1);
}

// The name /v1/models lists: --alias, else the model folder's name, else the built-in model's.
// --kv-memory: a fraction of the machine's RAM (0.5), or a size in bytes with an optional
// binary suffix (8G, 512MiB, 1.5GiB, 1000000).
uint64_t kv_memory_bytes(const std::string& text) {
  const auto bad = [&] {
    fail(
        "--kv-memory '{}': expected a fraction of the RAM (such as 0.5) or a size such as 8G, "
        "512MiB or 1000000",
        text);
  };
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    bad();
  }
  std::string suffix = text.substr(used);
  if (!(value > 0) || !std::isfinite(value)) bad();
  if (suffix.empty() && value <= 1.0) {
    const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
    return uint64_t(value * ram);
  }
  for (const char* unit : {"iB", "B"}) {
    if (suffix.size() > 1 && suffix.ends_with(unit)) suffix.resize(suffix.size() - strlen(unit));
  }
  double scale = 1;
  if (suffix == "K" || suffix == "k")
    scale = 0x1p10;
  else if (suffix == "M")
    scale = 0x1p20;
  else if (suffix == "G")
    scale = 0x1p30;
  else if (suffix == "T")
    scale = 0x1p40;
  else if (!suffix.empty() && suffix != "B")
    bad();
  if (value * scale >= 0x1p63) bad();
  return uint64_t(value * scale);
}

std::string served_name(const ServeOptions& o) {
  if (!o.alias.empty()) return o.alias;
  if (o.model_dir.empty()) return embedded_model_name();
  const std::filesystem::path dir = std::filesystem::path(o.model_dir).lexically_normal();
  const std::string name =
      dir.has_filename() ? dir.filename().string() : dir.parent_path().filename().string();
  return name.empty() || name == "." ? "model" : name;
}

void check(const ServeOptions& o) {
  if (o.port < 0 || o.port > 65535) fail("--port must be in [0, 65535] (0: any free port)");
  if (o.parallel < 1) fail("--parallel must be at least 1, got {}", o.parallel);
  if (o.queue < 1) fail("--queue must be at least 1, got {}", o.queue);
  if (o.timeout < 1) fail("--timeout must be at least 1 second, got {}", o.timeout);
  if (o.max_body < 1024) fail("--max-body must be at least 1024 bytes, got {}", o.max_body);
  if (o.context < 0) fail("-c must be positive, got {}", o.context);
}

void run_serve(const ServeOptions& o) {
  check(o);
  install_stop_handlers();

  const std::string name = served_name(o);
  // Declared before the engine, so that they outlive its worker.
  std::unique_ptr<LoadedModel> model;
  server::Metrics metrics;
  server::Engine engine(server::EngineOptions{.max_waiting = size_t(o.queue),
                                              .parallel = o.parallel,
                                              .step_tokens = o.batch,
                                              .prefix_cache = !o.no_prefix_cache,
                                              .kv_memory = kv_memory_bytes(o.kv_memory)},
                        metrics);
  server::ApiServer api(server::ApiOptions{name, o.api_key, o.batch}, engine, metrics);

  server::HttpServerOptions http_options;
  http_options.host = o.host;
  http_options.port = o.port;
  http_options.max_body_bytes = o.max_body;
  http_options.read_timeout_seconds = o.timeout;
  http_options.write_timeout_seconds = o.timeout;
  // A connection per running or queued request, and a few for /health and /metrics besides.
  http_options.threads = o.parallel + o.queue + 4;
  http_options.error_body = server::default_error_body;
  server::HttpServer http(http_options,
                          [&api](const server::HttpRequest& r) { return api.handle(r); });
  const int port = http.listen();
  fmt::print(stderr, "dsa serve: listening on http://{}:{} (loading model {})\n", o.host, port,
             name);
  if (o.host != "127.0.0.1" && o.host != "localhost" && o.host != "::1" && o.api_key.empty()) {
    fmt::print(stderr,
               "dsa serve: warning: {} may be reachable from other machines, and no "
               "--api-key is set\n",
               o.host);
  }
  std::thread http_thread([&http] { http.run(); });
  const auto stop = [&] {
    engine.shutdown();
    http.stop();
  };
  std::thread signal_thread([&] {
    const int sig = wait_for_stop();
    if (sig != 0) {
      fmt::print(stderr, "dsa serve: {}, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    }
    stop();
  });

  try {
    GenerationOptions g;
    g.model_dir = o.model_dir;
    g.context = o.context;
    g.threads = o.threads;
    g.batch = o.batch;
    model = std::make_unique<LoadedModel>(load_model(g));
    engine.start(*model->model, model->tokenizer, model->context, *model->pool);
  } catch (...) {
    // Wake the signal thread, which stops the server, and rethrow the loading error.
    wake_stop_waiter();
    signal_thread.join();
    http_thread.join();
    throw;
  }
  api.set_ready(model->tokenizer, model->context);
  fmt::print(stderr,
             "dsa serve: model {} ready: context {} tokens, {} requests at a time, queue {}\n",
             name, model->context, o.parallel, o.queue);
  http_thread.join();
  engine.shutdown();
  signal_thread.join();
}

}  // namespace

void register_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (docs/server.md)");
  cmd->add_option("-m,--model", o->model_dir,
                  "Model folder (default: the built-in dsa-small model)");
  cmd->add_option("--host", o->host, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", o->port, "Port (default 8080; 0: any free port, printed)");
  cmd->add_option("-c,--ctx-size", o->context,
                  "Context size in tokens (default: 4096, at most max_position_embeddings)");
  cmd->add_option("--parallel", o->parallel,
                  "Requests generated at once, batched into each forward step (default 4)");
  cmd->add_option("-t,--threads", o->threads, "Threads for the model (default: all)");
  cmd->add_option("-b,--batch-size", o->batch,
                  "Prompt tokens per forward step, over all requests (default 512)");
  cmd->add_option("--api-key", o->api_key, "Require \"Authorization: Bearer KEY\" on /v1/*");
  cmd->add_option("--alias", o->alias, "Model name for /v1/models (default: the folder's name)");
  cmd->add_option("--queue", o->queue,
                  "Requests that may wait beyond the running one; more get 429 (default 16)");
  cmd->add_option("--max-body", o->max_body, "Largest request body in bytes (default 8 MiB)");
  cmd->add_option("--timeout", o->timeout,
                  "Seconds a read or write of a connection may take (default 10)");
  cmd->add_option("--kv-memory", o->kv_memory,
                  "Memory the KV caches may take: a fraction of the RAM or a size such as 8G "
                  "(default 0.5)");
  cmd->add_flag("--no-prefix-cache", o->no_prefix_cache,
                "Prefill every prompt in full instead of reusing a cached prefix");
  cmd->callback([o] { run_serve(*o); });
}

}  // namespace dsa::cli
