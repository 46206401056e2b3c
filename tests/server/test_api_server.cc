// The API layer in process, without sockets: routing, authentication and error statuses, then
// whole and streamed replies from the tiny random-weight model through the real engine, a
// client that goes away mid-stream, and a full queue.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "core/thread_pool.h"
#include "model/forward.h"
#include "server/api_server.h"
#include "server/json_out.h"
#include "support/model_fixture.h"
#include "support/test_util.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"

namespace dsa::server {
namespace {

HttpRequest request(std::string method, std::string path, std::string body = "",
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
  return HttpRequest{std::move(method), std::move(path), std::move(body), std::move(headers)};
}

Json body_of(const HttpResponse& r) { return Json::parse(r.body); }

// Records a streamed body; write number `fail_at` (0-based) and all after it fail, as writes to
// a closed connection do.
class RecordingStream : public ResponseStream {
 public:
  explicit RecordingStream(int fail_at = -1) : fail_at_(fail_at) {}
  bool write(std::string_view data) override {
    if (fail_at_ >= 0 && int(writes.size()) >= fail_at_) return false;
    writes.emplace_back(data);
    count = writes.size();
    return true;
  }
  std::vector<std::string> writes;
  std::atomic<size_t> count{0};  // writes.size(), for another thread to watch

 private:
  int fail_at_;
};

// The JSON of each "data: " event, and whether the stream ended with [DONE].
std::vector<Json> events(const RecordingStream& s, bool* done) {
  std::vector<Json> out;
  *done = false;
  for (const std::string& w : s.writes) {
    EXPECT_TRUE(w.starts_with("data: ") && w.ends_with("\n\n")) << w;
    const std::string payload = w.substr(6, w.size() - 8);
    if (payload == "[DONE]") {
      *done = true;
      continue;
    }
    EXPECT_FALSE(*done) << "data after [DONE]";
    out.push_back(Json::parse(payload));
  }
  return out;
}

const char* kChat = R"({"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                        "max_tokens": 12, "seed": 4, "temperature": 1})";

class ApiServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    test::write_random_model(dir_->path() / "model", test::preset_config("tiny"), 3);
    pool_ = new ThreadPool(2);
    model_ = Model::load(dir_->path() / "model", *pool_).release();
    text::BpeTrainer trainer({.vocab_size = 300, .min_frequency = 2});
    for (int i = 0; i < 20; ++i) trainer.add_text("the user says hello and the model answers. ");
    tokenizer_ = new text::Tokenizer(
        text::Tokenizer::from_json_text(trainer.train_to_json(), "trained tokenizer"));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    delete pool_;
    delete dir_;
  }

  void start(int64_t context = 512, size_t queue = 4, std::string key = "", int64_t parallel = 1,
             bool prefix_cache = true) {
    engine_ = std::make_unique<Engine>(EngineOptions{.max_waiting = queue,
                                                     .parallel = parallel,
                                                     .step_tokens = 64,
                                                     .prefix_cache = prefix_cache},
                                       metrics_);
    api_ = std::make_unique<ApiServer>(ApiOptions{"tiny", key, 64}, *engine_, metrics_);
    engine_->start(*model_, *tokenizer_, context, *pool_);
    api_->set_ready(*tokenizer_, context);
  }

  // A counter of GET /metrics, or -1 when it is not there.
  double metric(const std::string& name) {
    const std::string text = api_->handle(request("GET", "/metrics")).body;
    const size_t at = text.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
  }
  void TearDown() override {
    if (engine_) engine_->shutdown();
  }

  HttpResponse post(const std::string& path, const std::string& body) {
    return api_->handle(request("POST", path, body));
  }

  static inline test::TempDir* dir_ = nullptr;
  static inline ThreadPool* pool_ = nullptr;
  static inline Model* model_ = nullptr;
  static inline text::Tokenizer* tokenizer_ = nullptr;
  Metrics metrics_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ApiServer> api_;
};

TEST_F(ApiServerTest, LoadingMeans503ForHealthAndGeneration) {
  Engine engine(EngineOptions{}, metrics_);
  ApiServer api(ApiOptions{"tiny", "", 64}, engine, metrics_);
  HttpResponse r = api.handle(request("GET", "/health"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(body_of(r)["error"]["type"], "unavailable_error");
  EXPECT_EQ(api.handle(request("POST", "/v1/chat/completions", kChat)).status, 503);
  EXPECT_EQ(api.handle(request("GET", "/metrics")).status, 200);
  EXPECT_EQ(api.handle(request("GET", "/v1/models")).status, 200);
}

TEST_F(ApiServerTest, RoutesAndMethods) {
  start();
  EXPECT_EQ(api_->handle(request("GET", "/health")).status, 200);
  const Json models = body_of(api_->handle(request("GET", "/v1/models")));
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(api_->handle(request("GET", "/v1/models/tiny")).status, 200);
  HttpResponse r = api_->handle(request("GET", "/v1/models/gpt-4"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(body_of(r)["error"]["code"], "model_not_found");
  r = api_->handle(request("GET", "/v1/nothing"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(body_of(r)["error"]["code"], "unknown_url");
  EXPECT_EQ(api_->handle(request("GET", "/v1/chat/completions")).status, 405);
  EXPECT_EQ(api_->handle(request("POST", "/health")).status, 405);
  r = post("/v1/chat/completions",
           R"({"model": "other", "messages": [{"role": "user", "content": "x"}]})");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(post("/v1/chat/completions", "{").status, 400);
  const std::string metrics = api_->handle(request("GET", "/metrics")).body;
  for (const char* name :
       {"dsa:num_requests_running", "dsa:num_requests_waiting", "dsa:prompt_tokens_total",
        "dsa:generation_tokens_total", "dsa:time_to_first_token_seconds_bucket",
        "dsa:inter_token_latency_seconds_bucket", "dsa:kv_cache_usage_perc"}) {
    EXPECT_NE(metrics.find(name), std::string::npos) << name;
  }
}

TEST_F(ApiServerTest, ApiKey) {
  start(512, 4, "sekret");
  EXPECT_EQ(api_->handle(request("GET", "/health")).status, 200);  // open, like llama-server's
  HttpResponse r = api_->handle(request("GET", "/v1/models"));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(body_of(r)["error"]["type"], "authentication_error");
  EXPECT_EQ(
      api_->handle(request("GET", "/v1/models", "", {{"Authorization", "Bearer wrong"}})).status,
      401);
  EXPECT_EQ(
      api_->handle(request("GET", "/v1/models", "", {{"authorization", "Bearer sekret"}})).status,
      200);
}

TEST_F(ApiServerTest, PromptBeyondTheContextIs400) {
  start(32);
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "hello the model ";
  const HttpResponse r =
      post("/v1/chat/completions",
           R"({"messages": [{"role": "user", "content": ")" + long_text + R"("}]})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(body_of(r)["error"]["code"], "context_length_exceeded");
}

TEST_F(ApiServerTest, WholeAndStreamedRepliesAgree) {
  start();
  const HttpResponse whole = post("/v1/chat/completions", kChat);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json w = body_of(whole);
  EXPECT_EQ(w["object"], "chat.completion");
  EXPECT_EQ(w["model"], "tiny");
  EXPECT_EQ(w["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(w["usage"]["completion_tokens"], 12);
  EXPECT_GT(w["usage"]["prompt_tokens"].get<int>(), 0);
  const std::string text = w["choices"][0]["message"]["content"];

  std::string streamed_body = kChat;
  streamed_body.insert(streamed_body.size() - 1,
                       R"(, "stream": true, "stream_options": {"include_usage": true})");
  HttpResponse streamed = post("/v1/chat/completions", streamed_body);
  ASSERT_EQ(streamed.status, 200);
  EXPECT_EQ(streamed.content_type, "text/event-stream");
  ASSERT_TRUE(streamed.stream);
  RecordingStream out;
  streamed.stream(out);
  bool done = false;
  const std::vector<Json> chunks = events(out, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(chunks.size(), 3u);
  std::string joined;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Json& c = chunks[i];
    EXPECT_EQ(c["id"], chunks[0]["id"]);
    const bool last = i + 1 == chunks.size();
    if (last) {  // usage, after the finish chunk
      EXPECT_EQ(c["choices"], Json::array());
      EXPECT_EQ(c["usage"], w["usage"]);
      continue;
    }
    const Json& delta = c["choices"][0]["delta"];
    EXPECT_EQ(delta.contains("role"), i == 0);
    if (delta.contains("content")) {
      EXPECT_FALSE(delta["content"].get<std::string>().empty());
      joined += delta["content"].get<std::string>();
    }
    EXPECT_EQ(c["choices"][0]["finish_reason"].is_null(), i + 2 != chunks.size());
  }
  EXPECT_EQ(joined, text) << "the same seed gives the same text, streamed or not";
}

TEST_F(ApiServerTest, DisconnectMidStreamStopsTheGeneration) {
  start(2048);
  const std::string body = R"({"messages": [{"role": "user", "content": "hello"}], "stream": true,
                               "max_tokens": 3000, "seed": 1, "temperature": 1,
                               "ignore_eos": true})";
  HttpResponse r = post("/v1/chat/completions", body);
  ASSERT_TRUE(r.stream);
  RecordingStream gone(4);  // the role chunk and three deltas, then the client is gone
  const auto start_time = std::chrono::steady_clock::now();
  r.stream(gone);
  EXPECT_EQ(gone.writes.size(), 4u);
  // The worker stops at its next token; wait for it (bounded), then the slot is free.
  while (engine_->running() != 0 &&
         std::chrono::steady_clock::now() - start_time < std::chrono::seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(engine_->running(), 0);
  EXPECT_LT(metric("dsa:generation_tokens_total"), 2000)
      << "generation ran on after the disconnect";
  const std::string metrics = api_->handle(request("GET", "/metrics")).body;
  EXPECT_NE(metrics.find("finished_reason=\"abort\"} 1"), std::string::npos) << metrics;
  // The next request is served.
  EXPECT_EQ(post("/v1/chat/completions", kChat).status, 200);
}

TEST_F(ApiServerTest, ShutdownMidStreamEndsItWithAnErrorChunk) {
  start(2048);
  HttpResponse r = post("/v1/chat/completions",
                        R"({"messages": [{"role": "user", "content": "hello"}], "stream": true,
                            "max_tokens": 1900, "ignore_eos": true, "seed": 1})");
  ASSERT_TRUE(r.stream);
  RecordingStream out;
  std::thread client([&] { r.stream(out); });
  while (out.count < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  engine_->shutdown();
  client.join();
  bool done = false;
  const std::vector<Json> chunks = events(out, &done);
  EXPECT_TRUE(done);
  ASSERT_FALSE(chunks.empty());
  const Json& last = chunks.back();
  ASSERT_TRUE(last.contains("error")) << last.dump();
  EXPECT_FALSE(last.contains("choices"));
  EXPECT_NE(last["error"]["message"].get<std::string>().find("shutting down"), std::string::npos);
  // Afterwards new requests are refused, not queued for nobody.
  EXPECT_EQ(post("/v1/chat/completions", kChat).status, 503);
}

TEST_F(ApiServerTest, FullQueueIs429) {
  start(2048, 1);
  const std::string long_body = R"({"messages": [{"role": "user", "content": "hello"}],
                                    "stream": true, "max_tokens": 4000, "seed": 1,
                                    "ignore_eos": true})";
  HttpResponse running = post("/v1/chat/completions", long_body);
  ASSERT_TRUE(running.stream);
  while (engine_->running() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  HttpResponse waiting = post("/v1/chat/completions", long_body);  // fills the queue of 1
  ASSERT_TRUE(waiting.stream);
  const HttpResponse refused = post("/v1/chat/completions", kChat);
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(body_of(refused)["error"]["type"], "rate_limit_error");
  // Dropping the unstreamed responses cancels their jobs; the engine is free again.
  running = HttpResponse();
  waiting = HttpResponse();
  const auto start_time = std::chrono::steady_clock::now();
  while ((engine_->running() != 0 || engine_->waiting() != 0) &&
         std::chrono::steady_clock::now() - start_time < std::chrono::seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(engine_->waiting(), 0);
  EXPECT_EQ(post("/v1/chat/completions", kChat).status, 200);
}

TEST_F(ApiServerTest, CompletionsEndpoint) {
  start();
  const HttpResponse r =
      post("/v1/completions", R"({"prompt": "the user", "max_tokens": 5, "seed": 2})");
  ASSERT_EQ(r.status, 200) << r.body;
  const Json b = body_of(r);
  EXPECT_EQ(b["object"], "text_completion");
  EXPECT_TRUE(b["choices"][0]["text"].is_string());
  EXPECT_EQ(b["usage"]["completion_tokens"], 5);
}

// Continuous batching: requests generated together in one batch each get the text they get when
// run alone with the same seed (small batches are bit-identical to solo forward calls,
// test_forward_batch.cc), whatever joins or leaves the batch meanwhile.
TEST_F(ApiServerTest, ConcurrentRequestsGetTheTextTheyGetAlone) {
  start(512, 8, "", 3);
  const std::vector<std::string> bodies = {
      R"({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 20, "seed": 1,
          "temperature": 1, "ignore_eos": true})",
      R"({"messages": [{"role": "user", "content": "the model answers the user"}],
          "max_tokens": 9, "seed": 2, "temperature": 0.8, "ignore_eos": true})",
      R"({"messages": [{"role": "system", "content": "and the user says"},
                       {"role": "user", "content": "hello hello"}],
          "max_tokens": 31, "seed": 3, "temperature": 1.2, "ignore_eos": true})",
      R"({"messages": [{"role": "user", "content": "answers"}], "max_tokens": 14, "seed": 4,
          "temperature": 1, "ignore_eos": true, "stream": true})"};
  const auto content = [&](const std::string& body) {
    HttpResponse r = post("/v1/chat/completions", body);
    if (!r.stream) return body_of(r)["choices"][0]["message"]["content"].get<std::string>();
    RecordingStream out;
    r.stream(out);
    bool done = false;
    std::string text;
    for (const Json& e : events(out, &done)) {
      if (!e["choices"].empty() && e["choices"][0]["delta"].contains("content")) {
        text += e["choices"][0]["delta"]["content"].get<std::string>();
      }
    }
    return text;
  };
  std::vector<std::string> alone;
  for (const std::string& body : bodies) alone.push_back(content(body));
  // Four requests on three slots: the fourth waits, then joins as the first leaves.
  std::vector<std::string> together(bodies.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < bodies.size(); ++i) {
    clients.emplace_back([&, i] { together[i] = content(bodies[i]); });
  }
  for (std::thread& c : clients) c.join();
  for (size_t i = 0; i < bodies.size(); ++i) {
    EXPECT_FALSE(alone[i].empty()) << i;
    EXPECT_EQ(together[i], alone[i]) << "request " << i;
  }
  EXPECT_EQ(metric("dsa:num_requests_running"), 0);
}

TEST_F(ApiServerTest, AtMostParallelRequestsRunAndTheRestWait) {
  start(2048, 4, "", 2);
  const std::string long_body = R"({"messages": [{"role": "user", "content": "hello"}],
                                    "stream": true, "max_tokens": 4000, "seed": 1,
                                    "ignore_eos": true})";
  std::vector<HttpResponse> responses;
  for (int i = 0; i < 3; ++i) responses.push_back(post("/v1/chat/completions", long_body));
  const auto start_time = std::chrono::steady_clock::now();
  while (engine_->running() < 2 &&
         std::chrono::steady_clock::now() - start_time < std::chrono::seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(engine_->running(), 2);
  EXPECT_EQ(engine_->waiting(), 1);
  EXPECT_EQ(metric("dsa:num_requests_running"), 2);
  EXPECT_EQ(metric("dsa:num_requests_waiting"), 1);
  responses.clear();  // cancels all three; their slots are freed
  while ((engine_->running() != 0 || engine_->waiting() != 0) &&
         std::chrono::steady_clock::now() - start_time < std::chrono::seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(engine_->running(), 0);
  EXPECT_EQ(engine_->waiting(), 0);
  EXPECT_EQ(metric("dsa:kv_cache_tokens"), 0);
}

// A long shared system prompt is computed once: later requests that begin with it reuse its
// cached tokens in whole prefill chunks (64 here), and get the text they get without the cache.
TEST_F(ApiServerTest, PrefixCacheReusesASharedSystemPromptAndChangesNoText) {
  std::string system;
  for (int i = 0; i < 30; ++i) system += "the user says hello and the model answers. ";
  const auto body = [&](const std::string& question) {
    return Json{{"messages", Json::array({Json{{"role", "system"}, {"content", system}},
                                          Json{{"role", "user"}, {"content", question}}})},
                {"max_tokens", 12},
                {"seed", 9},
                {"temperature", 1},
                {"ignore_eos", true}}
        .dump();
  };
  const std::vector<std::string> questions = {"hello", "the model", "hello", "says the user"};
  double hits_before = 0;
  const auto replies = [&](bool prefix_cache) {
    start(1024, 4, "", 2, prefix_cache);
    std::vector<std::string> out;
    double cached = 0;
    for (const std::string& q : questions) {
      const HttpResponse r = post("/v1/chat/completions", body(q));
      EXPECT_EQ(r.status, 200) << r.body;
      out.push_back(body_of(r)["choices"][0]["message"]["content"].get<std::string>());
      EXPECT_GT(body_of(r)["usage"]["prompt_tokens"].get<int>(), 128);
      cached += body_of(r)["usage"]["prompt_tokens_details"]["cached_tokens"].get<double>();
    }
    const double queries = metric("dsa:prefix_cache_queries_total");
    const double hits = metric("dsa:prefix_cache_hits_total");
    EXPECT_EQ(cached, prefix_cache ? hits - hits_before : 0);  // usage agrees with /metrics
    hits_before = hits;
    engine_->shutdown();
    return std::tuple{out, queries, hits};
  };
  const auto [cold, cold_queries, cold_hits] = replies(false);
  const auto [warm, warm_queries, warm_hits] = replies(true);
  EXPECT_EQ(warm, cold);
  EXPECT_EQ(cold_hits, 0);
  EXPECT_EQ(warm_queries, 2 * cold_queries);  // the counters add up over both servers
  // Two slots: the first two requests start cold, the next two reuse at least the system
  // prompt's whole chunks (the third repeats the first, and may reuse more).
  EXPECT_GE(warm_hits, 2 * 128);
  EXPECT_EQ(std::fmod(warm_hits, 64.0), 0.0);
}

}  // namespace
}  // namespace dsa::server
