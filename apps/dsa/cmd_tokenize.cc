// `dsa tokenize` and `dsa detokenize`: text <-> token ids with a model's tokenizer.json.
//
//   dsa tokenize (-m DIR | --tokenizer FILE) [--ids] [--no-special] [--bos] < text
//     One token a line, "id<TAB>text" (the token's bytes, with \n \r \t \\ escaped and any other
//     control byte or byte outside a whole UTF-8 character as \xNN); with --ids, the ids on one
//     line separated by spaces.
//   dsa detokenize (-m DIR | --tokenizer FILE) [--skip-special] < ids
//     Ids separated by whitespace; the text is written as the ids arrive, never cutting a UTF-8
//     character in two.
#include <fmt/format.h>

#include <charconv>
#include <climits>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "text/streaming_detokenizer.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace dsa::cli {
namespace {

struct TokenizerSource {
  std::string model_dir;
  std::string tokenizer_file;
};

void add_tokenizer_options(CLI::App* cmd, TokenizerSource& source) {
  auto* model =
      cmd->add_option("-m,--model", source.model_dir, "Model directory with tokenizer.json");
  auto* file = cmd->add_option("--tokenizer", source.tokenizer_file, "A tokenizer.json file");
  model->excludes(file);
}

text::Tokenizer load_tokenizer(const TokenizerSource& source, std::string_view command) {
  if (!source.tokenizer_file.empty()) return text::Tokenizer::from_file(source.tokenizer_file);
  if (!source.model_dir.empty()) return text::Tokenizer::from_model_dir(source.model_dir);
  fail("{}: give the tokenizer with -m DIR or --tokenizer FILE", command);
}

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

// A token's bytes on one line: whole UTF-8 characters as they are, the rest escaped.
std::string escape_piece(std::string_view bytes) {
  std::string out;
  size_t pos = 0;
  while (pos < bytes.size()) {
    const auto byte = static_cast<uint8_t>(bytes[pos]);
    const size_t length = text::utf8_char_length(bytes, pos);
    if (byte == '\n') {
      out += "\\n";
    } else if (byte == '\r') {
      out += "\\r";
    } else if (byte == '\t') {
      out += "\\t";
    } else if (byte == '\\') {
      out += "\\\\";
    } else if (length == 0 || byte < 0x20 || byte == 0x7F) {
      out += fmt::format("\\x{:02X}", byte);
    } else {
      out.append(bytes.substr(pos, length));
      pos += length;
      continue;
    }
    ++pos;
  }
  return out;
}

void run_tokenize(const TokenizerSource& source, bool ids_only, bool no_special, bool add_bos) {
  const text::Tokenizer tokenizer = load_tokenizer(source, "tokenize");
  std::vector<int32_t> ids;
  if (add_bos) {
    if (!tokenizer.bos_id()) fail("tokenize: --bos given but the tokenizer has no BOS token");
    ids.push_back(*tokenizer.bos_id());
  }
  const std::vector<int32_t> encoded = tokenizer.encode(read_stdin(), !no_special);
  ids.insert(ids.end(), encoded.begin(), encoded.end());
  std::string out;
  if (ids_only) {
    out = fmt::format("{}\n", fmt::join(ids, " "));
  } else {
    for (const int32_t id : ids)
      out += fmt::format("{}\t{}\n", id, escape_piece(tokenizer.token_bytes(id)));
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void run_detokenize(const TokenizerSource& source, bool skip_special) {
  const text::Tokenizer tokenizer = load_tokenizer(source, "detokenize");
  text::StreamingDetokenizer stream(tokenizer, skip_special);
  const auto write = [](const std::string& text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
  };
  std::string word;
  for (size_t index = 0; std::cin >> word; ++index) {
    int64_t id = -1;
    const auto [end, error] = std::from_chars(word.data(), word.data() + word.size(), id);
    if (error != std::errc() || end != word.data() + word.size() || id < 0 || id > INT32_MAX) {
      fail("detokenize: input item {} (\"{}\") is not a token id", index, word);
    }
    if (id >= tokenizer.vocab_size()) {
      fail("detokenize: input item {}: token id {} is out of range (vocabulary size {})", index, id,
           tokenizer.vocab_size());
    }
    write(stream.push(static_cast<int32_t>(id)));
    if (std::cin.peek() == '\n') std::fflush(stdout);  // a line of ids: show its text now
  }
  write(stream.flush());
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto source = std::make_shared<TokenizerSource>();
  auto* tokenize =
      app.add_subcommand("tokenize", "Text on stdin to tokens (one 'id<TAB>text' a line)");
  add_tokenizer_options(tokenize, *source);
  auto ids_only = std::make_shared<bool>(false);
  auto no_special = std::make_shared<bool>(false);
  auto add_bos = std::make_shared<bool>(false);
  tokenize->add_flag("--ids", *ids_only, "Print only the ids, space-separated, on one line");
  tokenize->add_flag("--no-special", *no_special,
                     "Encode special tokens in the text as plain text");
  tokenize->add_flag("--bos", *add_bos, "Start with the BOS token");
  tokenize->callback([=] { run_tokenize(*source, *ids_only, *no_special, *add_bos); });

  auto detok_source = std::make_shared<TokenizerSource>();
  auto* detokenize =
      app.add_subcommand("detokenize", "Token ids on stdin (whitespace-separated) to text");
  add_tokenizer_options(detokenize, *detok_source);
  auto skip_special = std::make_shared<bool>(false);
  detokenize->add_flag("--skip-special", *skip_special, "Leave out special tokens (BOS, EOS, ...)");
  detokenize->callback([=] { run_detokenize(*detok_source, *skip_special); });
}

}  // namespace dsa::cli
