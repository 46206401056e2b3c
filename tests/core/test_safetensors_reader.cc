// Checkpoint folders: single files, index.json shards, lookups, and every broken index or folder
// rejected with a dsa::Error naming the file and the tensor.
#include <gtest/gtest.h>

#include <initializer_list>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/safetensors_writer.h"
#include "support/test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Writes one small shard holding I32 tensors [value] named `names`.
void write_shard(const fs::path& path, std::initializer_list<std::string> names) {
  SafetensorsWriter writer;
  int32_t value = 1;
  for (const std::string& name : names) {
    writer.add(name, DType::I32, {1},
               [value](std::span<uint8_t> out) { std::memcpy(out.data(), &value, sizeof value); });
    ++value;
  }
  writer.write(path);
}

std::string message_of(const fs::path& path) {
  try {
    Checkpoint checkpoint(path);
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected dsa::Error opening " << path;
  return "";
}

void expect_message(const std::string& message, std::initializer_list<std::string_view> parts) {
  for (std::string_view part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
  }
}

// A folder with shards a.safetensors {x, y} and b.safetensors {z} and the given index text.
struct ShardedFolder {
  TempDir dir;
  explicit ShardedFolder(const std::string& index) {
    write_shard(dir / "a.safetensors", {"x", "y"});
    write_shard(dir / "b.safetensors", {"z"});
    test::write_text_file(dir / "model.safetensors.index.json", index);
  }
  std::string index_path() const { return (dir / "model.safetensors.index.json").string(); }
};

constexpr const char* kGoodIndex =
    R"({"metadata": {"total_size": 12},
        "weight_map": {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors"}})";

TEST(SafetensorsReader, ReadsShardsThroughTheIndex) {
  ShardedFolder folder(kGoodIndex);
  const Checkpoint checkpoint(folder.dir.path());
  EXPECT_EQ(checkpoint.directory(), folder.dir.path());
  EXPECT_EQ(checkpoint.tensor_names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_TRUE(checkpoint.contains("y"));
  EXPECT_FALSE(checkpoint.contains("w"));
  EXPECT_EQ(checkpoint.view("y").data<int32_t>()[0], 2);
  EXPECT_EQ(checkpoint.view("z").data<int32_t>()[0], 1);
  EXPECT_EQ(checkpoint.info("z").shape, Shape({1}));
  EXPECT_EQ(checkpoint.files().size(), 2u);
}

TEST(SafetensorsReader, OpensASingleFileByPath) {
  TempDir dir;
  write_shard(dir / "weights.safetensors", {"b", "a"});
  const Checkpoint checkpoint(dir / "weights.safetensors");
  EXPECT_EQ(checkpoint.tensor_names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(checkpoint.view("a").data<int32_t>()[0], 2);
  const SafetensorsFile file(dir / "weights.safetensors");
  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.tensors()[0].name, "b");  // in data-offset order
  EXPECT_EQ(file.find("c"), nullptr);
}

TEST(SafetensorsReader, MissingTensorNamesTheCheckpointAndTensor) {
  TempDir dir;
  write_shard(dir / "model.safetensors", {"a"});
  const Checkpoint checkpoint(dir.path());
  for (auto lookup :
       {+[](const Checkpoint& c) { c.view("nope"); }, +[](const Checkpoint& c) { c.info("nope"); },
        +[](const Checkpoint& c) { c.bytes("nope"); }}) {
    try {
      lookup(checkpoint);
      ADD_FAILURE() << "expected dsa::Error";
    } catch (const Error& error) {
      expect_message(error.what(), {dir.path().string(), "no tensor 'nope'"});
    }
  }
  try {
    checkpoint.files()[0].view("nope");
    ADD_FAILURE() << "expected dsa::Error";
  } catch (const Error& error) {
    expect_message(error.what(), {(dir / "model.safetensors").string(), "no tensor 'nope'"});
  }
}

TEST(SafetensorsReader, EmptyFolderIsNotACheckpoint) {
  TempDir dir;
  expect_message(
      message_of(dir.path()),
      {dir.path().string(), "neither model.safetensors nor model.safetensors.index.json"});
}

TEST(SafetensorsReader, MissingPath) {
  TempDir dir;
  expect_message(message_of(dir / "absent"), {(dir / "absent").string(), "does not exist"});
}

TEST(SafetensorsReader, FolderWithBothLayoutsIsAmbiguous) {
  ShardedFolder folder(kGoodIndex);
  write_shard(folder.dir / "model.safetensors", {"x"});
  expect_message(message_of(folder.dir.path()), {folder.dir.path().string(), "both"});
}

TEST(SafetensorsReader, ModelFileThatIsAFolder) {
  TempDir dir;
  fs::create_directory(dir / "model.safetensors");
  expect_message(message_of(dir.path()),
                 {(dir / "model.safetensors").string(), "not a regular file"});
}

TEST(SafetensorsReader, IndexWithInvalidJson) {
  ShardedFolder folder(R"({"weight_map": {"x": "a.safetensors",)");
  expect_message(message_of(folder.dir.path()), {folder.index_path(), "invalid JSON"});
}

TEST(SafetensorsReader, IndexWithoutWeightMap) {
  ShardedFolder folder(R"({"metadata": {}})");
  expect_message(message_of(folder.dir.path()), {folder.index_path(), "no 'weight_map'"});
  ShardedFolder array_map(R"({"weight_map": ["a.safetensors"]})");
  expect_message(message_of(array_map.dir.path()),
                 {array_map.index_path(), "'weight_map' must be an object"});
  ShardedFolder not_object(R"(["weight_map"])");
  expect_message(message_of(not_object.dir.path()),
                 {not_object.index_path(), "must be a JSON object"});
  ShardedFolder empty(R"({"weight_map": {}})");
  expect_message(message_of(empty.dir.path()), {empty.index_path(), "lists no tensors"});
}

TEST(SafetensorsReader, IndexWithNonStringShard) {
  ShardedFolder folder(R"({"weight_map": {"x": 1}})");
  expect_message(message_of(folder.dir.path()),
                 {folder.index_path(), "tensor 'x' maps to an integer"});
}

TEST(SafetensorsReader, IndexNamesAMissingShard) {
  ShardedFolder folder(R"({"weight_map": {"x": "a.safetensors", "q": "c.safetensors"}})");
  expect_message(message_of(folder.dir.path()),
                 {folder.index_path(), "tensor 'q'", "c.safetensors", "does not exist"});
}

TEST(SafetensorsReader, IndexNamesATensorItsShardLacks) {
  ShardedFolder folder(R"({"weight_map": {"x": "a.safetensors", "z": "a.safetensors"}})");
  expect_message(message_of(folder.dir.path()),
                 {folder.index_path(), "tensor 'z'", "a.safetensors", "does not contain it"});
}

TEST(SafetensorsReader, ShardPathEscapingTheFolder) {
  for (const char* shard :
       {"../a.safetensors", "sub/../../a.safetensors", "/etc/passwd", "", "."}) {
    SCOPED_TRACE(shard);
    ShardedFolder folder(fmt::format(R"({{"weight_map": {{"x": "{}"}}}})", shard));
    expect_message(message_of(folder.dir.path()),
                   {folder.index_path(), "tensor 'x'", "not a file inside"});
  }
}

TEST(SafetensorsReader, SameTensorInTwoShards) {
  ShardedFolder folder(R"({"weight_map": {"x": "a.safetensors", "z": "c.safetensors"}})");
  write_shard(folder.dir / "c.safetensors", {"z", "x"});
  expect_message(message_of(folder.dir.path()),
                 {"tensor 'x' is in two shards", "a.safetensors", "c.safetensors"});
}

TEST(SafetensorsReader, IndexWithDuplicateTensor) {
  ShardedFolder folder(R"({"weight_map": {"x": "a.safetensors", "x": "b.safetensors"}})");
  expect_message(message_of(folder.dir.path()),
                 {folder.index_path(), "duplicate key 'x' in the object 'weight_map'"});
}

TEST(SafetensorsReader, CorruptShardNamesTheShard) {
  ShardedFolder folder(kGoodIndex);
  test::write_text_file(folder.dir / "b.safetensors", "short");
  expect_message(message_of(folder.dir.path()),
                 {(folder.dir / "b.safetensors").string(), "too short"});
}

}  // namespace
}  // namespace dsa
