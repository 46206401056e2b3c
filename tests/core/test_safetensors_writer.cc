// SafetensorsWriter round trips (every dtype, scalars, empty tensors, metadata, shards) read back
// with the memory-mapped reader, the header layout, and atomic replacement.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/safetensors_writer.h"
#include "support/test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Bytes that differ per tensor and per position, so a swapped or shifted tensor is noticed.
std::vector<uint8_t> pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = uint8_t(seed * 31 + i * 7 + (i >> 8));
  return bytes;
}

struct Expected {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
};

void add_all(SafetensorsWriter& writer, const std::vector<Expected>& tensors) {
  for (const Expected& tensor : tensors) {
    writer.add(tensor.name, tensor.dtype, tensor.shape, [&tensor](std::span<uint8_t> out) {
      ASSERT_EQ(out.size(), tensor.bytes.size());
      std::copy(tensor.bytes.begin(), tensor.bytes.end(), out.begin());
    });
  }
}

// Every dtype with odd element counts, a scalar and an empty tensor, ordered by element size
// (as the reference writer does) so that every tensor stays aligned for zero-copy views.
std::vector<Expected> every_dtype() {
  std::vector<Expected> tensors;
  const std::vector<std::pair<DType, Shape>> cases = {
      {DType::I64, {3}},        {DType::I64, {}},      {DType::F32, {3, 5}},
      {DType::F32, {}},         {DType::I32, {1, 7}},  {DType::F16, {7}},
      {DType::BF16, {2, 3, 5}}, {DType::BF16, {0, 8}}, {DType::F8_E4M3, {3, 3}}};
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [dtype, shape] = cases[i];
    tensors.push_back({fmt::format("t{}.{}", i, dtype_name(dtype)), dtype, shape,
                       pattern(size_t(shape.numel()) * dtype_size(dtype), uint8_t(i + 1))});
  }
  return tensors;
}

void expect_contents(const Checkpoint& checkpoint, const std::vector<Expected>& tensors) {
  ASSERT_EQ(checkpoint.tensor_names().size(), tensors.size());
  for (const Expected& tensor : tensors) {
    SCOPED_TRACE(tensor.name);
    const TensorInfo& info = checkpoint.info(tensor.name);
    EXPECT_EQ(info.dtype, tensor.dtype);
    EXPECT_EQ(info.shape, tensor.shape);
    ASSERT_EQ(info.nbytes(), tensor.bytes.size());
    const std::span<const uint8_t> bytes = checkpoint.bytes(tensor.name);
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), tensor.bytes.begin(), tensor.bytes.end()));
    const TensorView view = checkpoint.view(tensor.name);
    EXPECT_EQ(view.dtype(), tensor.dtype);
    EXPECT_EQ(view.shape(), tensor.shape);
    ASSERT_EQ(view.nbytes(), tensor.bytes.size());
    if (!tensor.bytes.empty()) {
      EXPECT_EQ(std::memcmp(view.raw_data(), tensor.bytes.data(), tensor.bytes.size()), 0);
    }
  }
}

TEST(SafetensorsWriter, RoundTripsEveryDtypeScalarsEmptyTensorsAndMetadata) {
  TempDir dir;
  const auto tensors = every_dtype();
  SafetensorsWriter writer;
  add_all(writer, tensors);
  writer.set_metadata("format", "pt");
  writer.set_metadata("note", "round trip");
  const fs::path path = dir / "all.safetensors";
  writer.write(path);

  const Checkpoint checkpoint(path);
  expect_contents(checkpoint, tensors);
  ASSERT_EQ(checkpoint.files().size(), 1u);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "round trip"}};
  EXPECT_EQ(checkpoint.files()[0].metadata(), metadata);
}

TEST(SafetensorsWriter, HeaderIsPaddedAndTensorsArePackedLargestElementFirst) {
  TempDir dir;
  const auto tensors = every_dtype();
  SafetensorsWriter writer;
  add_all(writer, tensors);
  const fs::path path = dir / "layout.safetensors";
  writer.write(path);

  const std::string file = test::read_text_file(path);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | uint8_t(file[size_t(i)]);
  EXPECT_EQ(header_size % 8, 0u);
  const std::string header = file.substr(8, header_size);
  const size_t json_end = header.find_last_not_of(' ') + 1;
  EXPECT_LT(header.size() - json_end, 8u);  // only the padding follows the JSON

  // The JSON lists tensors in data-offset order: by element size, largest first, and otherwise
  // in insertion order.
  std::vector<Expected> expected_order = tensors;
  std::stable_sort(expected_order.begin(), expected_order.end(),
                   [](const Expected& a, const Expected& b) {
                     return dtype_size(a.dtype) > dtype_size(b.dtype);
                   });
  size_t previous_position = 0;
  uint64_t offset = 0;
  const auto json = nlohmann::json::parse(header);
  for (const Expected& tensor : expected_order) {
    const size_t position = header.find(fmt::format("\"{}\"", tensor.name));
    ASSERT_NE(position, std::string::npos);
    EXPECT_GT(position, previous_position) << tensor.name;
    previous_position = position;
    EXPECT_EQ(json[tensor.name]["data_offsets"][0].get<uint64_t>(), offset) << tensor.name;
    offset += tensor.bytes.size();
  }
  EXPECT_EQ(file.size(), 8 + header_size + offset);
}

TEST(SafetensorsWriter, ViewsPointIntoTheMapping) {
  TempDir dir;
  SafetensorsWriter writer;
  const Tensor values(DType::F32, {4, 2});
  for (int i = 0; i < 8; ++i) values.data<float>()[i] = float(i) * 0.5f;
  writer.add("w", values);
  writer.write(dir / "model.safetensors");

  const SafetensorsFile file(dir / "model.safetensors");
  const TensorView view = file.view("w");
  EXPECT_EQ(view.raw_data(), file.bytes(*file.find("w")).data());
  for (int i = 0; i < 8; ++i) EXPECT_EQ(view.data<float>()[i], float(i) * 0.5f);
}

TEST(SafetensorsWriter, EveryTensorIsAlignedToItsElementSize) {
  // An odd-sized fp8 tensor added before wider ones must not push them off their alignment.
  TempDir dir;
  SafetensorsWriter writer;
  const std::vector<Expected> tensors = {{"odd", DType::F8_E4M3, {3}, pattern(3, 1)},
                                         {"half", DType::BF16, {3}, pattern(6, 2)},
                                         {"wide", DType::I64, {2}, pattern(16, 3)},
                                         {"single", DType::F32, {2}, pattern(8, 4)}};
  add_all(writer, tensors);
  writer.write(dir / "model.safetensors");
  const Checkpoint checkpoint(dir.path());
  for (const Expected& tensor : tensors) {
    const TensorView view = checkpoint.view(tensor.name);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(view.raw_data()) % dtype_size(tensor.dtype), 0u)
        << tensor.name;
    const auto* bytes = static_cast<const uint8_t*>(view.raw_data());
    EXPECT_TRUE(std::equal(bytes, bytes + tensor.bytes.size(), tensor.bytes.begin()))
        << tensor.name;
  }
}

TEST(SafetensorsWriter, ShardsWithIndexAndReportsProgress) {
  TempDir dir;
  std::vector<Expected> tensors;
  for (int i = 0; i < 5; ++i) {
    tensors.push_back({fmt::format("layer.{}", i), DType::BF16, {4, 8}, pattern(64, uint8_t(i))});
  }
  SafetensorsWriter writer;
  add_all(writer, tensors);
  writer.set_metadata("format", "pt");
  std::vector<uint64_t> progress;
  // 64-byte tensors, 128-byte shards: two tensors per shard, three shards.
  writer.write_checkpoint(dir.path(), 128, [&](uint64_t bytes) { progress.push_back(bytes); });

  EXPECT_EQ(progress, (std::vector<uint64_t>{64, 128, 192, 256, 320}));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  for (const char* shard : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                            "model-00003-of-00003.safetensors"}) {
    EXPECT_TRUE(fs::exists(dir / shard)) << shard;
  }
  const auto index =
      nlohmann::json::parse(test::read_text_file(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 320u);
  EXPECT_EQ(index["weight_map"]["layer.4"].get<std::string>(), "model-00003-of-00003.safetensors");

  const Checkpoint checkpoint(dir.path());
  EXPECT_EQ(checkpoint.files().size(), 3u);
  expect_contents(checkpoint, tensors);
  EXPECT_EQ(checkpoint.files()[1].metadata().at("format"), "pt");
  const Checkpoint from_index(dir / "model.safetensors.index.json");
  expect_contents(from_index, tensors);
}

TEST(SafetensorsWriter, CheckpointSwitchesBetweenSingleFileAndShards) {
  TempDir dir;
  const std::vector<Expected> tensors = {{"a", DType::I32, {4}, pattern(16, 1)},
                                         {"b", DType::I32, {4}, pattern(16, 2)}};
  SafetensorsWriter writer;
  add_all(writer, tensors);

  writer.write_checkpoint(dir.path(), 1000);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  expect_contents(Checkpoint(dir.path()), tensors);

  writer.write_checkpoint(dir.path(), 16);  // one tensor per shard
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  expect_contents(Checkpoint(dir.path()), tensors);

  writer.write_checkpoint(dir.path(), 1000);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  expect_contents(Checkpoint(dir.path()), tensors);
}

TEST(SafetensorsWriter, EmptyWriterWritesAValidFile) {
  TempDir dir;
  SafetensorsWriter().write_checkpoint(dir.path(), 1 << 20);
  const Checkpoint checkpoint(dir.path());
  EXPECT_TRUE(checkpoint.tensor_names().empty());
}

std::vector<std::string> folder_entries(const fs::path& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(SafetensorsWriter, FailingFillerLeavesNoFileBehind) {
  TempDir dir;
  SafetensorsWriter writer;
  writer.add("good", DType::F32, {2}, [](std::span<uint8_t>) {});
  writer.add("bad", DType::F32, {2}, [](std::span<uint8_t>) { throw Error("generator failed"); });
  EXPECT_THROW(writer.write(dir / "model.safetensors"), Error);
  EXPECT_TRUE(folder_entries(dir.path()).empty());
  // Sharded: the first shard is complete before the second fails; no index names it.
  EXPECT_THROW(writer.write_checkpoint(dir.path(), 8), Error);
  EXPECT_EQ(folder_entries(dir.path()),
            std::vector<std::string>{"model-00001-of-00002.safetensors"});
}

TEST(SafetensorsWriter, FailingFillerKeepsTheExistingTarget) {
  TempDir dir;
  const fs::path path = dir / "model.safetensors";
  test::write_text_file(path, "previous contents");
  SafetensorsWriter writer;
  writer.add("bad", DType::I64, {1}, [](std::span<uint8_t>) { throw Error("generator failed"); });
  EXPECT_THROW(writer.write(path), Error);
  EXPECT_EQ(test::read_text_file(path), "previous contents");
  EXPECT_EQ(folder_entries(dir.path()), std::vector<std::string>{"model.safetensors"});
}

TEST(SafetensorsWriter, WriteFileAtomicallyReplacesContents) {
  TempDir dir;
  const fs::path path = dir / "config.json";
  write_file_atomically(path, "first");
  write_file_atomically(path, "second");
  EXPECT_EQ(test::read_text_file(path), "second");
  EXPECT_EQ(folder_entries(dir.path()), std::vector<std::string>{"config.json"});
}

TEST(SafetensorsWriter, WriteIntoMissingFolderNamesThePath) {
  TempDir dir;
  const fs::path path = dir / "missing" / "model.safetensors";
  try {
    write_file_atomically(path, "x");
    FAIL() << "expected dsa::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find((dir / "missing").string()), std::string::npos)
        << error.what();
  }
}

TEST(SafetensorsWriter, RejectsDuplicateAndReservedNames) {
  SafetensorsWriter writer;
  writer.add("w", DType::F32, {1}, [](std::span<uint8_t>) {});
  try {
    writer.add("w", DType::F32, {1}, [](std::span<uint8_t>) {});
    FAIL() << "expected dsa::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("'w' added twice"), std::string::npos) << error.what();
  }
  EXPECT_THROW(writer.add("__metadata__", DType::F32, {1}, [](std::span<uint8_t>) {}), Error);
  EXPECT_EQ(writer.tensors().size(), 1u);
  EXPECT_EQ(writer.total_bytes(), 4u);
}

}  // namespace
}  // namespace dsa
