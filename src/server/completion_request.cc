#include "server/completion_request.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/json_strict.h"
#include "core/printable.h"
#include "server/api_error.h"
#include "server/json_out.h"

namespace dsa::server {
namespace {

std::string_view type_phrase(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "an integer";
    case Json::value_t::number_float:
      return "a number";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::object:
      return "an object";
    default:
      return "an unexpected value";
  }
}

[[noreturn]] void wrong_type(std::string_view param, std::string_view expected, const Json& got) {
  bad_request(param, fmt::format("{}: expected {}, got {}", param, expected, type_phrase(got)));
}

// The member, or nullptr when it is absent or null (OpenAI's clients send null for "unset").
const Json* member(const Json& object, std::string_view key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<bool> read_bool(const Json& body, std::string_view key) {
  const Json* v = member(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) wrong_type(key, "true or false", *v);
  return v->get<bool>();
}

// A finite number in [lo, hi]; `range` describes the range for the message.
std::optional<double> read_number(const Json& body, std::string_view key, double lo, double hi,
                                  std::string_view range) {
  const Json* v = member(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    bad_request(key, fmt::format("{}: must be {}, got {}", key, range, dump_json(*v)));
  }
  return x;
}

std::optional<int64_t> read_integer(const Json& body, std::string_view key, int64_t lo,
                                    int64_t hi) {
  const Json* v = member(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) wrong_type(key, "an integer", *v);
  // Unsigned values beyond int64 cannot be in any range we accept.
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(hi)) {
    bad_request(key, fmt::format("{}: must be at most {}, got {}", key, hi, dump_json(*v)));
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) {
    bad_request(key, fmt::format("{}: must be in [{}, {}], got {}", key, lo, hi, dump_json(*v)));
  }
  return x;
}

std::optional<std::string> read_string(const Json& body, std::string_view key) {
  const Json* v = member(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) wrong_type(key, "a string", *v);
  return v->get<std::string>();
}

// Fields whose effect we cannot produce: refused when set to anything but their neutral value.
void refuse_unsupported(const Json& body) {
  if (const auto n = read_integer(body, "n", 1, 128); n && *n != 1) {
    bad_request("n", fmt::format("n: only 1 choice per request is supported, got {}", *n));
  }
  // Chat takes a boolean, /v1/completions a count.
  if (const Json* v = member(body, "logprobs")) {
    if (!v->is_boolean() && !v->is_number_integer()) {
      wrong_type("logprobs", "true or false", *v);
    }
    if (v->is_boolean() ? v->get<bool>() : v->get<int64_t>() != 0) {
      bad_request("logprobs",
                  "logprobs: not supported yet (the generation loop does not report per-token "
                  "probabilities)");
    }
  }
  if (const auto top = read_integer(body, "top_logprobs", 0, 20); top && *top != 0) {
    bad_request("top_logprobs", "top_logprobs: not supported yet (logprobs is not supported)");
  }
  for (const std::string_view key : {"presence_penalty", "frequency_penalty"}) {
    if (const auto p = read_number(body, key, -2, 2, "in [-2, 2]"); p && *p != 0) {
      bad_request(key, fmt::format("{}: not supported; repeat_penalty (llama.cpp's repetition "
                                   "penalty) is",
                                   key));
    }
  }
  if (const Json* bias = member(body, "logit_bias")) {
    if (!bias->is_object()) wrong_type("logit_bias", "an object", *bias);
    if (!bias->empty()) bad_request("logit_bias", "logit_bias: not supported");
  }
  for (const std::string_view key : {"functions", "function_call"}) {
    if (member(body, key)) {
      bad_request(key, fmt::format("{}: the deprecated functions API is not supported; use tools "
                                   "and tool_choice",
                                   key));
    }
  }
}

void read_sampling(const Json& body, CompletionRequest& r) {
  SamplerParams& s = r.sampling;
  if (const auto t = read_number(body, "temperature", 0, 2, "in [0, 2]")) s.temperature = float(*t);
  if (const auto p = read_number(body, "top_p", 0, 1, "in (0, 1]")) {
    if (*p == 0) bad_request("top_p", "top_p: must be in (0, 1], got 0 (use temperature 0)");
    s.top_p = float(*p);
  }
  // vLLM spells "off" -1, llama.cpp 0; both mean all tokens.
  if (const auto k = read_integer(body, "top_k", -1, std::numeric_limits<int32_t>::max())) {
    s.top_k = *k < 0 ? 0 : int32_t(*k);
  }
  if (const auto m = read_number(body, "min_p", 0, 1, "in [0, 1]")) s.min_p = float(*m);
  if (const auto rp = read_number(body, "repeat_penalty", 0, 100, "in (0, 100]")) {
    if (*rp == 0) bad_request("repeat_penalty", "repeat_penalty: must be > 0 (1: off)");
    s.repeat_penalty = float(*rp);
  }
  if (const Json* seed = member(body, "seed")) {
    if (!seed->is_number_integer()) wrong_type("seed", "an integer", *seed);
    // Negative seeds are valid in OpenAI's API; any 64-bit pattern is a seed to us.
    r.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : uint64_t(seed->get<int64_t>());
  }
  const int64_t max = std::numeric_limits<int32_t>::max();
  const auto max_tokens = read_integer(body, "max_tokens", 1, max);
  const auto max_completion = read_integer(body, "max_completion_tokens", 1, max);
  if (max_completion) {
    r.max_tokens = *max_completion;  // the newer name wins, as in OpenAI's API
  } else if (max_tokens) {
    r.max_tokens = *max_tokens;
  }
}

void read_stop(const Json& body, CompletionRequest& r) {
  const Json* stop = member(body, "stop");
  if (!stop) return;
  const auto add = [&](const Json& s, std::string param) {
    if (!s.is_string()) wrong_type(param, "a string", s);
    const std::string& text = s.get_ref<const std::string&>();
    if (text.empty()) bad_request(param, fmt::format("{}: a stop string may not be empty", param));
    if (text.size() > kMaxStopBytes) {
      bad_request(param, fmt::format("{}: a stop string may have at most {} bytes, got {}", param,
                                     kMaxStopBytes, text.size()));
    }
    r.stop.push_back(text);
  };
  if (stop->is_string()) {
    add(*stop, "stop");
    return;
  }
  if (!stop->is_array()) wrong_type("stop", "a string or an array of strings", *stop);
  if (stop->size() > kMaxStopStrings) {
    bad_request("stop", fmt::format("stop: at most {} stop strings, got {}", kMaxStopStrings,
                                    stop->size()));
  }
  for (size_t i = 0; i < stop->size(); ++i) add((*stop)[i], fmt::format("stop[{}]", i));
}

void read_stream(const Json& body, CompletionRequest& r) {
  r.stream = read_bool(body, "stream").value_or(false);
  const Json* options = member(body, "stream_options");
  if (!options) return;
  if (!r.stream) {
    bad_request("stream_options", "stream_options: only allowed when stream is true");
  }
  if (!options->is_object()) wrong_type("stream_options", "an object", *options);
  if (const Json* usage = member(*options, "include_usage")) {
    if (!usage->is_boolean()) wrong_type("stream_options.include_usage", "true or false", *usage);
    r.include_usage = usage->get<bool>();
  }
}

// A function name as OpenAI allows them (which also keeps it safe inside DSML's name="...").
bool valid_function_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// tools: [{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}]
// with a JSON-schema object for the parameters. Returns the names.
std::vector<std::string> check_tools(const Json& body) {
  std::vector<std::string> names;
  const Json* tools = member(body, "tools");
  if (!tools) return names;
  if (!tools->is_array()) wrong_type("tools", "an array", *tools);
  std::set<std::string> seen;
  for (size_t i = 0; i < tools->size(); ++i) {
    const Json& tool = (*tools)[i];
    const std::string at = fmt::format("tools[{}]", i);
    if (!tool.is_object()) wrong_type(at, "an object", tool);
    const Json* type = member(tool, "type");
    if (!type || *type != "function") {
      bad_request(at + ".type", fmt::format("{}.type: must be \"function\"", at));
    }
    const Json* function = member(tool, "function");
    if (!function) bad_request(at + ".function", fmt::format("{}.function: missing", at));
    if (!function->is_object()) wrong_type(at + ".function", "an object", *function);
    const std::string fn = at + ".function";
    const Json* name = member(*function, "name");
    if (!name) bad_request(fn + ".name", fmt::format("{}.name: missing", fn));
    if (!name->is_string()) wrong_type(fn + ".name", "a string", *name);
    const std::string& n = name->get_ref<const std::string&>();
    if (!valid_function_name(n)) {
      bad_request(fn + ".name",
                  fmt::format("{}.name: \"{}\" is not a valid function name (1 to 64 of a-z, "
                              "A-Z, 0-9, _, - and .)",
                              fn, printable_excerpt(n)));
    }
    if (!seen.insert(n).second) {
      bad_request(fn + ".name", fmt::format("{}.name: function \"{}\" is declared twice", fn, n));
    }
    if (const Json* d = member(*function, "description"); d && !d->is_string()) {
      wrong_type(fn + ".description", "a string", *d);
    }
    if (const Json* s = member(*function, "strict"); s && !s->is_boolean()) {
      wrong_type(fn + ".strict", "true or false", *s);
    }
    if (const Json* p = member(*function, "parameters")) {
      const std::string pp = fn + ".parameters";
      if (!p->is_object()) wrong_type(pp, "a JSON Schema object", *p);
      if (const Json* t = member(*p, "type"); t && *t != "object") {
        bad_request(pp + ".type", fmt::format("{}.type: must be \"object\" (a function takes "
                                              "named arguments)",
                                              pp));
      }
      if (const Json* props = member(*p, "properties")) {
        if (!props->is_object()) wrong_type(pp + ".properties", "an object", *props);
        for (const auto& [key, schema] : props->items()) {
          if (!schema.is_object() && !schema.is_boolean()) {
            wrong_type(fmt::format("{}.properties.{}", pp, printable_excerpt(key)),
                       "a JSON Schema (an object)", schema);
          }
        }
      }
      if (const Json* req = member(*p, "required")) {
        if (!req->is_array()) wrong_type(pp + ".required", "an array of strings", *req);
        for (size_t j = 0; j < req->size(); ++j) {
          if (!(*req)[j].is_string()) {
            wrong_type(fmt::format("{}.required[{}]", pp, j), "a string", (*req)[j]);
          }
        }
      }
    }
    names.push_back(n);
  }
  return names;
}

void read_tool_choice(const Json& body, CompletionRequest& r) {
  if (const auto parallel = read_bool(body, "parallel_tool_calls")) {
    r.parallel_tool_calls = *parallel;
  }
  const Json* choice = member(body, "tool_choice");
  if (!choice) return;
  if (choice->is_string()) {
    const std::string& c = choice->get_ref<const std::string&>();
    if (c == "auto") {
      r.tool_choice = ToolChoice::kAuto;
    } else if (c == "none") {
      r.tool_choice = ToolChoice::kNone;
    } else if (c == "required") {
      r.tool_choice = ToolChoice::kRequired;
    } else {
      bad_request("tool_choice",
                  fmt::format("tool_choice: expected \"auto\", \"none\", \"required\" or "
                              "{{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got "
                              "\"{}\"",
                              printable_excerpt(c)));
    }
  } else if (choice->is_object()) {
    const Json* type = member(*choice, "type");
    const Json* function = member(*choice, "function");
    const Json* name = function && function->is_object() ? member(*function, "name") : nullptr;
    if (!type || *type != "function" || !name || !name->is_string()) {
      bad_request("tool_choice",
                  "tool_choice: a named choice is {\"type\": \"function\", "
                  "\"function\": {\"name\": \"NAME\"}}");
    }
    r.tool_choice = ToolChoice::kNamed;
    r.tool_choice_name = name->get<std::string>();
    bool declared = false;
    for (const std::string& n : r.tool_names) declared = declared || n == r.tool_choice_name;
    if (!declared) {
      bad_request("tool_choice", fmt::format("tool_choice: function \"{}\" is not among the tools",
                                             printable_excerpt(r.tool_choice_name)));
    }
  } else {
    wrong_type("tool_choice", "a string or an object", *choice);
  }
  if ((r.tool_choice == ToolChoice::kRequired || r.tool_choice == ToolChoice::kNamed) &&
      r.tool_names.empty()) {
    bad_request("tool_choice", "tool_choice: a tool call is required but no tools are given");
  }
}

ResponseFormat read_response_format(const Json& body) {
  const Json* format = member(body, "response_format");
  if (!format) return ResponseFormat::kText;
  if (!format->is_object()) wrong_type("response_format", "an object", *format);
  const Json* type = member(*format, "type");
  if (!type || !type->is_string()) {
    bad_request("response_format.type",
                "response_format.type: expected \"text\", \"json_object\" or \"json_schema\"");
  }
  if (*type == "text") return ResponseFormat::kText;
  if (*type == "json_object") return ResponseFormat::kJsonObject;
  if (*type == "json_schema") {
    const Json* schema = member(*format, "json_schema");
    if (!schema || !schema->is_object()) {
      bad_request("response_format.json_schema",
                  "response_format.json_schema: expected an object with \"name\" and \"schema\"");
    }
    if (const Json* s = member(*schema, "schema"); s && !s->is_object() && !s->is_boolean()) {
      wrong_type("response_format.json_schema.schema", "a JSON Schema (an object)", *s);
    }
    return ResponseFormat::kJsonSchema;
  }
  bad_request("response_format.type",
              fmt::format("response_format.type: expected \"text\", \"json_object\" or "
                          "\"json_schema\", got \"{}\"",
                          printable_excerpt(type->get<std::string>())));
}

bool read_thinking(const Json& body) {
  if (const Json* kwargs = member(body, "chat_template_kwargs")) {
    if (!kwargs->is_object()) wrong_type("chat_template_kwargs", "an object", *kwargs);
    if (const Json* t = member(*kwargs, "thinking")) {
      if (!t->is_boolean()) wrong_type("chat_template_kwargs.thinking", "true or false", *t);
      return t->get<bool>();
    }
  }
  // DeepSeek's own API: "thinking": {"type": "enabled" | "disabled"}.
  if (const Json* t = member(body, "thinking")) {
    const Json* type = t->is_object() ? member(*t, "type") : nullptr;
    if (!type || (*type != "enabled" && *type != "disabled")) {
      bad_request("thinking",
                  "thinking: expected {\"type\": \"enabled\"} or "
                  "{\"type\": \"disabled\"}");
    }
    return *type == "enabled";
  }
  if (const auto effort = read_string(body, "reasoning_effort")) {
    if (*effort == "none") return false;
    for (const char* level : {"minimal", "low", "medium", "high", "xhigh"}) {
      if (*effort == level) return true;
    }
    bad_request("reasoning_effort",
                fmt::format("reasoning_effort: expected none, minimal, low, medium, high or "
                            "xhigh, got \"{}\"",
                            printable_excerpt(*effort)));
  }
  return false;
}

// Clients send the reasoning of earlier assistant turns back as `reasoning_content` (DeepSeek,
// vLLM before 0.11) or `reasoning` (vLLM now, OpenRouter); the encoder reads the first.
void normalize_reasoning(Json& body) {
  Json* messages = body.contains("messages") ? &body["messages"] : nullptr;
  if (!messages || !messages->is_array()) return;
  for (Json& m : *messages) {
    if (!m.is_object() || !m.contains("reasoning")) continue;
    if (!m.contains("reasoning_content") || m["reasoning_content"].is_null()) {
      m["reasoning_content"] = m["reasoning"];
    }
    m.erase("reasoning");
  }
}

Json parse_body(std::string_view body) {
  Json json;
  try {
    json = parse_ordered_json_strict(body, "request body");
  } catch (const Error& e) {
    bad_request("", e.what());
  }
  if (!json.is_object()) {
    bad_request("",
                fmt::format("the request body must be a JSON object, got {}", type_phrase(json)));
  }
  return json;
}

void read_common(const Json& body, CompletionRequest& r) {
  if (const auto model = read_string(body, "model")) r.model = *model;
  refuse_unsupported(body);
  read_sampling(body, r);
  read_stop(body, r);
  read_stream(body, r);
  r.ignore_eos = read_bool(body, "ignore_eos").value_or(false);
}

}  // namespace

CompletionRequest parse_chat_completion_request(std::string_view text) {
  Json body = parse_body(text);
  CompletionRequest r;
  r.chat = true;
  read_common(body, r);
  const Json* messages = member(body, "messages");
  if (!messages) bad_request("messages", "messages: missing");
  if (!messages->is_array()) wrong_type("messages", "an array of messages", *messages);
  if (messages->empty()) bad_request("messages", "messages: at least one message is needed");
  r.tool_names = check_tools(body);
  read_tool_choice(body, r);
  r.response_format = read_response_format(body);
  r.thinking = read_thinking(body);
  normalize_reasoning(body);
  // The messages, tools and response_format as the chat encoding takes them. Its errors name
  // the JSON path ("request: messages[2].tool_calls[0]...") and quote only printable text.
  try {
    r.messages = text::parse_chat_request(dump_json(body), "request").messages;
  } catch (const Error& e) {
    bad_request("messages", e.what());
  }
  return r;
}

CompletionRequest parse_completion_request(std::string_view text) {
  const Json body = parse_body(text);
  CompletionRequest r;
  r.chat = false;
  read_common(body, r);
  if (const auto echo = read_bool(body, "echo"); echo && *echo) {
    bad_request("echo", "echo: not supported");
  }
  if (member(body, "suffix")) bad_request("suffix", "suffix: not supported");
  if (const auto best_of = read_integer(body, "best_of", 1, 128); best_of && *best_of != 1) {
    bad_request("best_of", "best_of: only 1 is supported");
  }
  const Json* prompt = member(body, "prompt");
  if (!prompt) bad_request("prompt", "prompt: missing");
  // One prompt per request: a string, or an array holding one string.
  if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
    prompt = &(*prompt)[0];
  }
  if (!prompt->is_string()) wrong_type("prompt", "a string", *prompt);
  r.prompt = prompt->get<std::string>();
  if (r.prompt.empty()) bad_request("prompt", "prompt: may not be empty");
  return r;
}

}  // namespace dsa::server
