// JSON as the server writes it: objects keep the order their keys were set in (id, object,
// created, model, choices... as OpenAI writes them), and serialization never throws. Model text is
// valid UTF-8 by construction (the streaming detokenizer and the output parser emit whole
// characters), but a server must not fail a reply on a broken invariant: any invalid byte is
// written as U+FFFD.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace dsa::server {

using Json = nlohmann::ordered_json;

inline std::string dump_json(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace dsa::server
