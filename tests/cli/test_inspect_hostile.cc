// Hostile model folders end in one clean `dsa: error:` line, quickly and in little memory: FIFOs
// named config.json, model.safetensors or the index (which used to block forever), a shard name
// leading out of the folder through a symlinked folder, a tensor with a layer index past int64
// (which used to end in "internal error: stoll"), configs whose sizes cannot be represented.
// What is legal keeps working: a Hugging Face cache snapshot whose files are links to blobs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/safetensors.h"
#include "core/safetensors_writer.h"
#include "support/measured_run.h"
#include "support/model_fixture.h"
#include "support/test_util.h"
#include "text/utf8.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

using Measured = test::MeasuredRun;

Measured run_measured(const std::vector<std::string>& args) { return test::run_dsa_measured(args); }

// What `dsa --version` costs: the binary's own start, measured once. The sanitizer build starts
// in about 0.5 s and 200 MB (shadow memory), a Release build in milliseconds and 9 MB; the limits
// below are on top of it.
const Measured& startup() {
  static const Measured version = run_measured({"--version"});
  return version;
}

// Exit 1, one `dsa: error:` line of valid UTF-8 without control bytes, within a second and
// 100 MB more than the binary's start; the message contains every part of `parts`.
void expect_clean_error(const std::vector<std::string>& args,
                        std::initializer_list<std::string_view> parts) {
  std::string command;
  for (const std::string& arg : args) command += arg + " ";
  SCOPED_TRACE(command);
  const Measured r = run_measured(args);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(r.err.starts_with("dsa: error: ")) << r.err;
  ASSERT_TRUE(r.err.ends_with("\n")) << r.err;
  const std::string line = r.err.substr(0, r.err.size() - 1);
  EXPECT_EQ(line.find('\n'), std::string::npos) << "more than one line: " << r.err;
  EXPECT_TRUE(text::is_valid_utf8(line)) << r.err;
  for (const char c : line) EXPECT_FALSE((unsigned char)c < 0x20 || c == 0x7f) << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  for (std::string_view part : parts) {
    EXPECT_NE(r.err.find(part), std::string::npos) << "missing '" << part << "' in: " << r.err;
  }
  EXPECT_LT(r.wall_seconds, startup().wall_seconds + 1.0);
  EXPECT_LT(r.max_resident_kb, startup().max_resident_kb + 100 * 1024);
}

void make_fifo(const fs::path& path) {
  std::error_code ignored;
  fs::remove(path, ignored);
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0) << std::strerror(errno);
}

class CliHostile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    test::write_random_model(tiny(), test::preset_config("tiny", /*fp8=*/false), 1);
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path tiny() { return *dir_ / "tiny"; }

  // A folder with tiny's config and weights, for one test to break.
  static fs::path copy_of_tiny(const std::string& name) {
    const fs::path out = *dir_ / name;
    fs::copy(tiny(), out, fs::copy_options::recursive);
    return out;
  }

  static TempDir* dir_;
};
TempDir* CliHostile::dir_ = nullptr;

TEST_F(CliHostile, FifoConfigJsonFailsAtOnce) {
  const fs::path model = copy_of_tiny("fifo_config");
  make_fifo(model / "config.json");
  const std::string fifo = (model / "config.json").string();
  expect_clean_error({"inspect", model.string()}, {fifo, "is a FIFO (named pipe)"});
  expect_clean_error({"inspect", fifo}, {fifo, "is a FIFO"});
  expect_clean_error(
      {"logits", "-m", model.string(), "--tokens", "1 2", "-o", (model / "out.npy").string()},
      {fifo, "is a FIFO"});
}

TEST_F(CliHostile, FifoWeightsFailAtOnce) {
  const fs::path single = copy_of_tiny("fifo_single");
  make_fifo(single / "model.safetensors");
  const std::string weights = (single / "model.safetensors").string();
  expect_clean_error({"inspect", single.string()}, {weights, "is a FIFO"});
  expect_clean_error(
      {"logits", "-m", single.string(), "--tokens", "1 2", "-o", (single / "out.npy").string()},
      {weights, "is a FIFO"});

  const fs::path indexed = copy_of_tiny("fifo_index");
  fs::remove(indexed / "model.safetensors");
  make_fifo(indexed / "model.safetensors.index.json");
  expect_clean_error({"inspect", indexed.string()},
                     {(indexed / "model.safetensors.index.json").string(), "is a FIFO"});
}

TEST_F(CliHostile, FifoTokenizerFailsAtOnce) {
  TempDir dir;
  make_fifo(dir / "tokenizer.json");
  expect_clean_error({"tokenize", "--tokenizer", (dir / "tokenizer.json").string()},
                     {(dir / "tokenizer.json").string(), "is a FIFO"});
  // In a model folder too: the error says what the file is, not that it is missing.
  expect_clean_error({"tokenize", "-m", dir.path().string()},
                     {(dir / "tokenizer.json").string(), "is a FIFO"});
}

TEST_F(CliHostile, ShardInASymlinkedFolderOutsideIsRefused) {
  TempDir outside;
  test::write_text_file(outside / "secret.txt", "TOPSECRETpassword\n");
  const fs::path model = copy_of_tiny("escape");
  fs::remove(model / "model.safetensors");
  fs::create_directory_symlink(outside.path(), model / "evil");
  test::write_text_file(model / "model.safetensors.index.json",
                        R"({"weight_map": {"model.embed_tokens.weight": "evil/secret.txt"}})");
  expect_clean_error({"inspect", model.string()},
                     {"names shard 'evil/secret.txt'", "not a file inside", "folder part"});
  const Measured r = run_measured({"inspect", model.string()});
  EXPECT_EQ(r.err.find("TOPSECRE"), std::string::npos) << r.err;
  uint64_t as_length = 0;
  std::memcpy(&as_length, "TOPSECRE", 8);
  EXPECT_EQ(r.err.find(std::to_string(as_length)), std::string::npos) << r.err;
}

// snapshots/<revision>/{config.json, model.safetensors} -> ../../blobs/<hash>, as
// huggingface_hub lays out its cache.
TEST_F(CliHostile, HuggingFaceCacheSnapshotLoads) {
  const fs::path cache = *dir_ / "hf_cache";
  const fs::path blobs = cache / "blobs", snapshot = cache / "snapshots" / "abc123";
  fs::create_directories(blobs);
  fs::create_directories(snapshot);
  fs::copy_file(tiny() / "config.json", blobs / "c0ffee");
  fs::copy_file(tiny() / "model.safetensors", blobs / "beef01");
  fs::create_symlink("../../blobs/c0ffee", snapshot / "config.json");
  fs::create_symlink("../../blobs/beef01", snapshot / "model.safetensors");
  const Measured inspect = run_measured({"inspect", snapshot.string()});
  EXPECT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("check: every tensor matches config.json"), std::string::npos);
  const Measured logits = run_measured(
      {"logits", "-m", snapshot.string(), "--tokens", "1 2 3", "-o", (cache / "l.npy").string()});
  EXPECT_EQ(logits.exit_code, 0) << logits.err;
  EXPECT_TRUE(fs::exists(cache / "l.npy"));
}

TEST_F(CliHostile, LayerIndexPastInt64IsAnUnexpectedTensor) {
  const fs::path model = *dir_ / "huge_index";
  const Checkpoint tiny_weights(tiny());
  SafetensorsWriter writer;
  for (const std::string& name : tiny_weights.tensor_names()) {
    writer.add(name, tiny_weights.view(name));
  }
  const std::string hostile = "model.layers.99999999999999999999.x";
  writer.add(hostile, DType::F32, {1},
             [](std::span<uint8_t> bytes) { std::fill(bytes.begin(), bytes.end(), uint8_t(0)); });
  writer.write_checkpoint(model, uint64_t(1) << 40);
  fs::copy_file(tiny() / "config.json", model / "config.json");
  expect_clean_error({"inspect", model.string()},
                     {"does not match its config.json", "unexpected: " + hostile});
  const Measured listed = run_measured({"inspect", "--tensors", model.string()});
  EXPECT_NE(listed.out.find(hostile), std::string::npos);
  const Measured as_json = run_measured({"inspect", "--json", model.string()});
  EXPECT_EQ(as_json.exit_code, 1) << as_json.err;
  EXPECT_EQ(as_json.err.find("internal error"), std::string::npos) << as_json.err;
}

TEST_F(CliHostile, ConfigsTooLargeToRepresentAreRejected) {
  const json tiny_config = json::parse(test::read_text_file(tiny() / "config.json"));
  constexpr int64_t kWidth = int64_t(1) << 18;
  json wide = tiny_config;
  for (const char* key :
       {"hidden_size", "intermediate_size", "moe_intermediate_size", "num_attention_heads",
        "num_key_value_heads", "kv_lora_rank", "q_lora_rank", "v_head_dim", "qk_nope_head_dim"}) {
    wide[key] = kWidth;
  }
  wide["num_hidden_layers"] = 1024;
  wide["num_nextn_predict_layers"] = 1024;
  TempDir dir;
  test::write_text_file(dir / "config.json", wide.dump());
  expect_clean_error({"inspect", dir.path().string()},
                     {"does not fit in 64 bits", "'num_hidden_layers'", "'hidden_size'"});

  json many = tiny_config;
  many["num_hidden_layers"] = 1024;
  many["num_nextn_predict_layers"] = 1024;
  many["n_routed_experts"] = 4096;
  many["n_group"] = 8;
  test::write_text_file(dir / "config.json", many.dump());
  expect_clean_error({"inspect", dir.path().string()},
                     {"too many parameter tensors", "'n_routed_experts'", "at most 131072"});
}

TEST_F(CliHostile, KvCacheAtAHugeContextIsRejected) {
  expect_clean_error({"inspect", "-c", "9223372036854775807", tiny().string()}, {"-c", "KV cache"});
}

}  // namespace
}  // namespace dsa
