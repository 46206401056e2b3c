// Checkpoint folders built to attack the reader: shard names that leave the folder through a
// symlinked folder or other tricks, FIFOs named like checkpoint files, an oversized index. Each
// is a dsa::Error naming the file, at once. Symlinked shard *files* (Hugging Face's cache) load.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/file_read.h"
#include "core/safetensors.h"
#include "core/safetensors_writer.h"
#include "support/test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

void write_shard(const fs::path& path, const std::string& tensor, int32_t value) {
  SafetensorsWriter writer;
  writer.add(tensor, DType::I32, {1},
             [value](std::span<uint8_t> out) { std::memcpy(out.data(), &value, sizeof value); });
  writer.write(path);
}

// The message of opening `path` as a checkpoint, which must fail within a second. The alarm ends
// the binary if the open blocks (a FIFO opened for reading without O_NONBLOCK).
std::string message_of(const fs::path& path) {
  const auto start = std::chrono::steady_clock::now();
  alarm(10);
  std::string message;
  try {
    Checkpoint checkpoint(path);
    ADD_FAILURE() << "expected dsa::Error opening " << path;
  } catch (const Error& error) {
    message = error.what();
  }
  alarm(0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  return message;
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "missing '" << part << "' in: " << text;
}

std::string index_for(const std::string& shard_json) {
  return R"({"weight_map": {"x": )" + shard_json + "}}";
}

TEST(SafetensorsHostile, ShardThroughASymlinkedFolderIsRefusedWithoutReadingIt) {
  TempDir outside;
  // Eight bytes that would be read as a little-endian header length, then more secret bytes.
  test::write_text_file(outside / "secret.txt", "SECRET!!password=hunter2\n");
  TempDir model;
  fs::create_directory_symlink(outside.path(), model / "evil");
  test::write_text_file(model / "model.safetensors.index.json", index_for("\"evil/secret.txt\""));
  const std::string message = message_of(model.path());
  expect_contains(message, (model / "model.safetensors.index.json").string());
  expect_contains(message, "tensor 'x' names shard 'evil/secret.txt'");
  expect_contains(message, "not a file inside");
  expect_contains(message, "folder part");
  for (const char* leaked : {"SECRET", "hunter2", "header length"}) {
    EXPECT_EQ(message.find(leaked), std::string::npos) << leaked << " in: " << message;
  }
  uint64_t as_length = 0;
  std::memcpy(&as_length, "SECRET!!", 8);
  EXPECT_EQ(message.find(std::to_string(as_length)), std::string::npos) << message;
}

TEST(SafetensorsHostile, ShardNamesMustBePlainFileNames) {
  const std::string too_long = "\"" + std::string(kMaxShardNameBytes + 1, 'a') + "\"";
  const std::pair<std::string, std::string> cases[] = {
      {"\"sub/a.safetensors\"", "folder part"},
      {"\"sub\\\\a.safetensors\"", "folder part"},
      {"\"./a.safetensors\"", "folder part"},
      {"\"..\"", "names a folder"},
      {"\".\"", "names a folder"},
      {"\"\"", "is empty"},
      {"\"a.safetensors\\u0000x\"", "NUL byte"},
      {too_long, "longer than 255 bytes"},
  };
  for (const auto& [shard, problem] : cases) {
    SCOPED_TRACE(shard);
    TempDir model;
    write_shard(model / "a.safetensors", "x", 1);
    fs::create_directory(model / "sub");
    write_shard(model / "sub" / "a.safetensors", "x", 1);
    test::write_text_file(model / "model.safetensors.index.json", index_for(shard));
    const std::string message = message_of(model.path());
    expect_contains(message, "tensor 'x'");
    expect_contains(message, "not a file inside");
    expect_contains(message, problem);
  }
  // The longest allowed name is a name like any other.
  TempDir model;
  const std::string longest(kMaxShardNameBytes, 'b');
  write_shard(model / "short.safetensors", "x", 5);  // the writer's temp name would be too long
  fs::rename(model / "short.safetensors", model / longest);
  test::write_text_file(model / "model.safetensors.index.json", index_for("\"" + longest + "\""));
  EXPECT_EQ(Checkpoint(model.path()).view("x").data<int32_t>()[0], 5);
}

// Hugging Face's cache: snapshots/<revision>/<file> are links to ../../blobs/<hash>.
TEST(SafetensorsHostile, HuggingFaceCacheLinksToBlobsLoad) {
  TempDir cache;
  const fs::path blobs = cache / "blobs";
  const fs::path snapshot = cache / "snapshots" / "0123abcd";
  fs::create_directories(blobs);
  fs::create_directories(snapshot);
  write_shard(blobs / "1111", "x", 7);
  write_shard(blobs / "2222", "y", 8);
  test::write_text_file(
      blobs / "3333",
      R"({"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}})");
  fs::create_symlink("../../blobs/1111", snapshot / "model-00001-of-00002.safetensors");
  fs::create_symlink("../../blobs/2222", snapshot / "model-00002-of-00002.safetensors");
  fs::create_symlink("../../blobs/3333", snapshot / "model.safetensors.index.json");
  const Checkpoint sharded(snapshot);
  EXPECT_EQ(sharded.view("x").data<int32_t>()[0], 7);
  EXPECT_EQ(sharded.view("y").data<int32_t>()[0], 8);

  TempDir single;
  fs::create_symlink(blobs / "1111", single / "model.safetensors");
  EXPECT_EQ(Checkpoint(single.path()).view("x").data<int32_t>()[0], 7);
}

TEST(SafetensorsHostile, FifosNamedLikeCheckpointFilesAreRefusedAtOnce) {
  {
    TempDir model;
    ASSERT_EQ(mkfifo((model / "model.safetensors").c_str(), 0600), 0) << std::strerror(errno);
    const std::string message = message_of(model.path());
    expect_contains(message, (model / "model.safetensors").string() + " is a FIFO");
  }
  {
    TempDir model;
    const fs::path index = model / "model.safetensors.index.json";
    ASSERT_EQ(mkfifo(index.c_str(), 0600), 0) << std::strerror(errno);
    expect_contains(message_of(model.path()), index.string() + " is a FIFO");
  }
  {
    TempDir model;
    ASSERT_EQ(mkfifo((model / "a.safetensors").c_str(), 0600), 0) << std::strerror(errno);
    test::write_text_file(model / "model.safetensors.index.json", index_for("\"a.safetensors\""));
    expect_contains(message_of(model.path()), (model / "a.safetensors").string() + " is a FIFO");
  }
  {
    TempDir model;
    fs::create_directory(model / "model.safetensors");
    expect_contains(message_of(model.path()), "is a directory, not a regular file");
  }
}

TEST(SafetensorsHostile, OversizedIndexIsRefusedBeforeReading) {
  TempDir model;
  const fs::path index = model / "model.safetensors.index.json";
  test::write_text_file(index, "");
  fs::resize_file(index, kMaxTextFileBytes + 1);  // sparse: costs no disk
  const std::string message = message_of(model.path());
  expect_contains(message, index.string());
  expect_contains(message, "more than the 64 MiB limit");
}

}  // namespace
}  // namespace dsa
