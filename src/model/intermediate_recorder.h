// Collects the named intermediates of a sequence of forward calls (an IntermediateSink) into one
// tensor per name, concatenated over the calls along the token axis: the layout of the goldens
// in tests/data/model_goldens and of `dsa logits --dump`.
//
// Per-call tensors whose second axis grows with the position (indexer.scores: [T, P+T]) are
// padded on the right to the widest call: -inf for floats (a masked score), -1 for int32.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/safetensors_writer.h"
#include "core/tensor.h"
#include "model/forward.h"

namespace dsa {

class IntermediateRecorder {
 public:
  // The sink to put in ForwardOptions::dump; it refers to this recorder.
  IntermediateSink sink();

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return pieces_.count(name) > 0; }
  // The concatenation for `name`; throws dsa::Error if it was never recorded.
  Tensor tensor(const std::string& name) const;
  // Every recorded tensor, as a safetensors file.
  void write(const std::filesystem::path& path) const;

 private:
  struct Piece {
    Shape shape;
    DType dtype;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, std::vector<Piece>> pieces_;
};

}  // namespace dsa
