// Holds back the end of streamed text while it may be the beginning of a stop string, and cuts
// the text at the first stop string. Stop strings are whole UTF-8, so a held-back suffix starts
// on a character boundary and the released text stays whole characters.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace dsa {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::span<const std::string> stops) : stops_(stops) {}

  struct Result {
    std::string text;  // ready to stream
    bool stopped = false;
  };

  // The next piece of text: what can be released, and whether a stop string was met (the text
  // from its start on is dropped, and nothing more may be pushed).
  Result push(std::string_view piece);

  // What is still held back, when the text ended without a stop string.
  std::string release();

 private:
  std::span<const std::string> stops_;
  std::string held_;
};

}  // namespace dsa
