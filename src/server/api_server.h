// The OpenAI-compatible API of `dsa serve`: routing, authentication, the chat and completions
// endpoints (whole and streamed replies), /v1/models, /health and /metrics. It sits on the
// transport (http_server.h) and the engine (engine.h) and knows neither's internals.
//
// Routes (docs/server.md):
//   POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /v1/models/{id}
//   GET /health (200 when the model is loaded, 503 while it loads)   GET /metrics
//   GET / and /index.html: the chat page (web_page.h)
// The /v1 prefix may be left out. With an API key, every route but /health, /metrics and the
// page wants "Authorization: Bearer KEY".
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "server/engine.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "text/tokenizer.h"

namespace dsa::server {

struct ApiOptions {
  std::string model_name;  // what /v1/models lists and requests must name (when they name one)
  std::string api_key;     // "" : no authentication
  int64_t prefill_chunk = 512;
};

class ApiServer {
 public:
  ApiServer(ApiOptions options, Engine& engine, Metrics& metrics);

  // The model is loaded: requests are served from now on. `tokenizer` must outlive the server.
  void set_ready(const text::Tokenizer& tokenizer, int64_t context);

  // Never throws: every failure becomes an error response.
  HttpResponse handle(const HttpRequest& request);

 private:
  HttpResponse route(const HttpRequest& request);
  HttpResponse completions(const HttpRequest& request, bool chat);
  HttpResponse models(const std::string& id) const;
  HttpResponse health() const;
  HttpResponse metrics() const;
  bool authorized(const HttpRequest& request) const;

  ApiOptions options_;
  Engine& engine_;
  Metrics& metrics_;
  const text::Tokenizer* tokenizer_ = nullptr;
  int64_t context_ = 0;
  std::atomic<bool> ready_{false};
  int64_t created_;  // when the server started: the model's "created"
};

}  // namespace dsa::server
