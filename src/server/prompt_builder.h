// From a checked request to what the model is given: the prompt text in the V3.2 chat encoding
// (or the raw prompt of /v1/completions), and how its reply is to be read.
//
// tool_choice is carried out as far as the model allows:
//   "none"      the tools are left out of the prompt, and a call the model writes anyway comes
//               back as text (StreamAssembler)
//   "required"  in non-thinking mode the reply is forced to begin a tool block: the prompt ends
//               with "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"", so the model can only
//               pick the function and write the arguments
//   named       the same, with the function's name and header forced too
// In thinking mode nothing may be forced before the reasoning, so "required" and named choices
// are asked for in the system prompt instead, and checked on the reply: a reply without the
// call gets a warning, and a call to another function comes back as text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/completion_request.h"
#include "server/stream_assembler.h"
#include "text/tokenizer.h"

namespace dsa::server {

struct BuiltPrompt {
  std::string text;  // the prompt, forced prefix included
  // The end of `text` that the reply is taken to begin with: the assembler reads it before the
  // model's text, as if the model had written it.
  std::string forced_prefix;
  bool add_bos = false;  // raw prompts start with BOS, as `dsa run` gives them
  AssemblerOptions assembler;
};

// Throws ApiError 400 for a conversation the encoding rejects.
BuiltPrompt build_prompt(const CompletionRequest& request);

// The prompt's token ids.
std::vector<int32_t> prompt_tokens(const BuiltPrompt& prompt, const text::Tokenizer& tokenizer);

}  // namespace dsa::server
