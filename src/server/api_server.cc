#include "server/api_server.h"

#include <fmt/format.h>

#include <chrono>
#include <random>

#include "core/error.h"
#include "core/printable.h"
#include "server/api_error.h"
#include "server/completion_request.h"
#include "server/ids.h"
#include "server/prompt_builder.h"
#include "server/reply_writer.h"
#include "server/web_page.h"

namespace dsa::server {
namespace {

int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

HttpResponse json_response(int status, const Json& body) {
  return HttpResponse{status, "application/json", dump_json(body), {}, nullptr};
}

HttpResponse error_response(const ApiError& e) {
  return HttpResponse{e.status(), "application/json", error_body(e), {}, nullptr};
}

// Equal strings, in a time that does not depend on where they differ (the API key).
bool equal_constant_time(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

// The route without its optional /v1 prefix and trailing slash.
std::string route_path(std::string path) {
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  if (path.starts_with("/v1/")) path.erase(0, 3);
  return path;
}

// Cancels a streamed reply's job when the response is dropped without being streamed (the
// client left before the headers went out): the stream function owns one, so the job never
// runs on for nobody. After a finished stream the cancel is a no-op.
struct CancelOnDrop {
  std::shared_ptr<Job> job;
  ~CancelOnDrop() {
    if (job) job->cancel();
  }
};

uint64_t random_seed() {
  std::random_device device;
  return uint64_t(device()) << 32 | device();
}

}  // namespace

ApiServer::ApiServer(ApiOptions options, Engine& engine, Metrics& metrics)
    : options_(std::move(options)), engine_(engine), metrics_(metrics), created_(unix_seconds()) {}

void ApiServer::set_ready(const text::Tokenizer& tokenizer, int64_t context) {
  tokenizer_ = &tokenizer;
  context_ = context;
  ready_ = true;
}

HttpResponse ApiServer::handle(const HttpRequest& request) {
  try {
    return route(request);
  } catch (const ApiError& e) {
    return error_response(e);
  } catch (const Error& e) {
    // A user error from below (the tokenizer, the encoder) that no check caught first.
    return error_response(ApiError(400, e.what()));
  } catch (const std::bad_alloc&) {
    return error_response(ApiError(500, "out of memory while handling the request"));
  } catch (const std::exception& e) {
    return error_response(ApiError(500, fmt::format("internal error: {}", printable(e.what()))));
  }
}

HttpResponse ApiServer::route(const HttpRequest& request) {
  const std::string path = route_path(request.path);
  const bool get = request.method == "GET" || request.method == "HEAD";
  const bool post = request.method == "POST";
  const auto want = [&](bool method_ok, std::string_view allowed) {
    if (!method_ok) {
      throw ApiError(405,
                     fmt::format("{} does not accept {} (use {})", printable_excerpt(request.path),
                                 printable(request.method), allowed));
    }
  };
  if (path == "/" || path == "/index.html") {  // the chat page holds no secrets: no key
    want(get, "GET");
    return web_page_response();
  }
  if (path == "/health") {
    want(get, "GET");
    return health();
  }
  if (path == "/metrics") {
    want(get, "GET");
    return metrics();
  }
  const bool known = path == "/chat/completions" || path == "/completions" || path == "/models" ||
                     path.starts_with("/models/");
  if (!known) {
    throw ApiError(
        404,
        fmt::format("no route {} {}", printable(request.method), printable_excerpt(request.path)),
        "", "unknown_url");
  }
  if (!authorized(request)) {
    throw ApiError(401, "invalid or missing API key: send \"Authorization: Bearer KEY\"", "",
                   "invalid_api_key");
  }
  if (path == "/models") {
    want(get, "GET");
    return models("");
  }
  if (path.starts_with("/models/")) {
    want(get, "GET");
    return models(path.substr(8));
  }
  want(post, "POST");
  return completions(request, path == "/chat/completions");
}

bool ApiServer::authorized(const HttpRequest& request) const {
  if (options_.api_key.empty()) return true;
  const std::string header = request.header("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (!header.starts_with(kBearer)) return false;
  return equal_constant_time(std::string_view(header).substr(kBearer.size()), options_.api_key);
}

HttpResponse ApiServer::health() const {
  if (!ready_) {
    return error_response(ApiError(503, "the model is loading", "", "model_loading"));
  }
  return json_response(200, Json{{"status", "ok"}});
}

HttpResponse ApiServer::metrics() const {
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4";
  r.body = metrics_.render(engine_.running(), engine_.waiting(), engine_.cache());
  return r;
}

HttpResponse ApiServer::models(const std::string& id) const {
  const Json model{
      {"id", options_.model_name}, {"object", "model"}, {"created", created_}, {"owned_by", "dsa"}};
  if (id.empty()) return json_response(200, Json{{"object", "list"}, {"data", Json{model}}});
  if (id != options_.model_name) {
    throw ApiError(404,
                   fmt::format("the model {} does not exist; this server serves {}",
                               printable_excerpt(id), options_.model_name),
                   "model", "model_not_found");
  }
  return json_response(200, model);
}

HttpResponse ApiServer::completions(const HttpRequest& request, bool chat) {
  if (!ready_) throw ApiError(503, "the model is loading", "", "model_loading");
  const CompletionRequest r =
      chat ? parse_chat_completion_request(request.body) : parse_completion_request(request.body);
  if (!r.model.empty() && r.model != options_.model_name) {
    throw ApiError(404,
                   fmt::format("the model {} does not exist; this server serves {}",
                               printable_excerpt(r.model), options_.model_name),
                   "model", "model_not_found");
  }
  BuiltPrompt prompt = build_prompt(r);
  std::vector<int32_t> tokens = prompt_tokens(prompt, *tokenizer_);
  if (int64_t(tokens.size()) >= context_) {
    throw ApiError(400,
                   fmt::format("{}: the prompt has {} tokens, but the context holds {} (-c), "
                               "and the reply needs at least one",
                               chat ? "messages" : "prompt", tokens.size(), context_),
                   chat ? "messages" : "prompt", "context_length_exceeded");
  }

  GenerationJob job;
  job.sampling = r.sampling;
  job.sampling.seed = r.seed.value_or(random_seed());
  job.params.max_tokens = r.max_tokens;
  job.params.stop_strings = r.stop;
  job.params.ignore_eos = r.ignore_eos;
  job.params.prefill_chunk = options_.prefill_chunk;
  job.prompt = std::move(tokens);

  ReplyJob reply;
  reply.prompt_tokens = int64_t(job.prompt.size());
  reply.job = engine_.submit(std::move(job));
  if (!reply.job) {
    if (!engine_.ready()) throw ApiError(503, "the server is shutting down", "", "unavailable");
    metrics_.request_rejected();
    throw ApiError(429, "the request queue is full; retry later", "", "queue_full");
  }
  reply.meta =
      ReplyMeta{chat, random_id(chat ? "chatcmpl-" : "cmpl-"), options_.model_name, unix_seconds()};
  reply.assembler = std::move(prompt.assembler);
  reply.forced_prefix = std::move(prompt.forced_prefix);
  reply.include_usage = r.include_usage;
  if (!r.stream) return whole_reply(reply);

  HttpResponse response;
  response.content_type = "text/event-stream";
  response.headers = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}};
  auto guard = std::make_shared<CancelOnDrop>();
  guard->job = reply.job;
  response.stream = [reply = std::move(reply), guard](ResponseStream& out) {
    stream_reply(reply, out);
  };
  return response;
}

}  // namespace dsa::server
