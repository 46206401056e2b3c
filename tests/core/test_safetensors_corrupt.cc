// Corrupt safetensors files, built byte by byte: each is a dsa::Error naming the file and the
// tensor, never a crash or a silently wrong tensor.
#include <gtest/gtest.h>

#include <initializer_list>

#include "core/error.h"
#include "core/safetensors.h"
#include "support/test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// 8-byte little-endian `header_length`, the header text, then `data_size` data bytes.
std::string file_bytes(std::string_view header, size_t data_size, uint64_t header_length) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(header_length >> (8 * i));
  bytes += header;
  bytes.append(data_size, '\x5a');
  return bytes;
}

std::string file_bytes(std::string_view header, size_t data_size) {
  return file_bytes(header, data_size, header.size());
}

// Opens `bytes` as a file and returns the dsa::Error it raises, after checking that the message
// names the file and contains every one of `expected`.
void expect_rejected(const std::string& bytes, std::initializer_list<std::string_view> expected) {
  TempDir dir;
  const fs::path path = dir / "bad.safetensors";
  test::write_text_file(path, bytes);
  try {
    SafetensorsFile file(path);
    ADD_FAILURE() << "accepted a corrupt file; expected an error containing " << *expected.begin();
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    for (std::string_view part : expected) {
      EXPECT_NE(message.find(part), std::string::npos)
          << "missing '" << part << "' in: " << message;
    }
  }
}

void expect_header_rejected(std::string_view header, size_t data_size,
                            std::initializer_list<std::string_view> expected) {
  expect_rejected(file_bytes(header, data_size), expected);
}

TEST(SafetensorsCorrupt, ValidBaselineIsAccepted) {
  // The same shape of file as the cases below, uncorrupted, so that they fail for their reason.
  TempDir dir;
  test::write_text_file(dir / "ok.safetensors",
                        file_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8));
  EXPECT_EQ(SafetensorsFile(dir / "ok.safetensors").tensors().size(), 1u);
}

TEST(SafetensorsCorrupt, FileShorterThanTheLengthField) {
  expect_rejected("", {"0 bytes", "too short"});
  expect_rejected(std::string("\x10\x00\x00", 3), {"3 bytes", "too short"});
}

TEST(SafetensorsCorrupt, HeaderLengthPastTheEndOfTheFile) {
  expect_rejected(file_bytes("{}", 0, 64), {"header length", "past the end"});
}

TEST(SafetensorsCorrupt, AbsurdHeaderLength) {
  expect_rejected(file_bytes("{}", 0, (100ull << 20) + 1), {"header length", "limit"});
  expect_rejected(file_bytes("{}", 0, ~0ull), {"header length", "limit"});
}

TEST(SafetensorsCorrupt, InvalidJson) {
  expect_header_rejected(R"({"w": {"dtype": "F32",)", 0, {"invalid JSON"});
  expect_header_rejected("{\"w\xff\": 1}", 0, {"invalid JSON"});  // not UTF-8
  expect_header_rejected(std::string("{}\0\0", 4), 0, {"invalid JSON: NUL byte at offset 2"});
  expect_header_rejected("{} x", 0, {"invalid JSON"});  // trailing garbage
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  expect_header_rejected("[1, 2]", 0, {"must be a JSON object, not an array"});
  expect_header_rejected("\"text\"", 0, {"must be a JSON object, not a string"});
}

TEST(SafetensorsCorrupt, TensorEntryNotAnObject) {
  expect_header_rejected(R"({"w": [0, 8]})", 8, {"tensor 'w'", "must be a JSON object"});
}

TEST(SafetensorsCorrupt, MissingFields) {
  expect_header_rejected(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8,
                         {"tensor 'w'", "no 'dtype'"});
  expect_header_rejected(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8,
                         {"tensor 'w'", "no 'shape'"});
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[2]}})", 8,
                         {"tensor 'w'", "no 'data_offsets'"});
}

TEST(SafetensorsCorrupt, WrongJsonTypes) {
  expect_header_rejected(R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8,
                         {"tensor 'w'", "'dtype' must be a string"});
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8,
                         {"tensor 'w'", "'shape' must be an array"});
  expect_header_rejected(
      R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8,
      {"tensor 'w'",
       "dimension 0 of 'shape' must be a non-negative integer, not a floating-point number"});
  expect_header_rejected(
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}})", 8,
      {"tensor 'w'", "data_offsets end must be a non-negative integer, not a string"});
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})", 8,
                         {"tensor 'w'", "'data_offsets' must be an array [begin, end]"});
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":{"b":0}}})", 8,
                         {"tensor 'w'", "'data_offsets' must be an array [begin, end]"});
}

TEST(SafetensorsCorrupt, NegativeValues) {
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", 8,
                         {"tensor 'w'", "dimension 1 of 'shape' is negative (-1)"});
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,8]}})", 8,
                         {"tensor 'w'", "data_offsets begin is negative"});
}

TEST(SafetensorsCorrupt, ShapeProductOverflow) {
  // 2^32 * 2^32 elements wrap to 0 in 64 bits, which would match an empty byte span.
  expect_header_rejected(
      R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
      {"tensor 'w'", "overflows"});
  // A single dimension whose byte count exceeds int64.
  expect_header_rejected(
      R"({"w":{"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,0]}})", 0,
      {"tensor 'w'", "overflows"});
  expect_header_rejected(
      R"({"w":{"dtype":"F8_E4M3","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", 1,
      {"tensor 'w'", "rank 9"});
}

TEST(SafetensorsCorrupt, UnsupportedDtypesNameTheDtypeTensorAndFile) {
  for (std::string_view dtype : {"F64", "I8", "U8", "BOOL", "F8_E5M2", "bf16", ""}) {
    SCOPED_TRACE(dtype);
    const std::string header =
        fmt::format(R"({{"x":{{"dtype":"{}","shape":[1],"data_offsets":[0,1]}}}})", dtype);
    expect_header_rejected(header, 1,
                           {fmt::format("unsupported dtype '{}' for tensor 'x' in ", dtype),
                            "(supported: F32, F16, BF16, F8_E4M3, I32, I64)"});
  }
}

TEST(SafetensorsCorrupt, ByteSpanDoesNotMatchShapeAndDtype) {
  expect_header_rejected(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}})", 8,
                         {"tensor 'w'", "BF16 [2, 3] needs 12 bytes", "span 8"});
}

TEST(SafetensorsCorrupt, OffsetsPastTheDataSection) {
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8,
                         {"tensor 'w'", "[0, 16] run past the 8-byte data section"});
}

TEST(SafetensorsCorrupt, BeginAfterEnd) {
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8,
                         {"tensor 'w'", "begin 8 is after end 4"});
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
  expect_header_rejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                            "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         12, {"tensor 'b'", "overlaps tensor 'a'"});
}

TEST(SafetensorsCorrupt, GapsBetweenOrBeforeTensors) {
  expect_header_rejected(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                            "b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                         12, {"tensor 'b'", "gap after byte 4"});
  expect_header_rejected(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
                         {"tensor 'a'", "starts at byte 4", "gap after byte 0"});
}

TEST(SafetensorsCorrupt, DataSectionLongerThanTheTensors) {
  expect_header_rejected(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12,
                         {"data section holds 12 bytes but the tensors end at byte 4"});
  expect_header_rejected("{}", 1, {"data section holds 1 bytes but the tensors end at byte 0"});
}

TEST(SafetensorsCorrupt, DuplicateTensorNames) {
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                            "w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                         8, {"duplicate tensor name 'w'"});
  expect_header_rejected(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"dtype":"I32"}})",
                         4, {"duplicate key 'dtype' in the object 'w'"});
}

TEST(SafetensorsCorrupt, MetadataNotAnObjectOfStrings) {
  expect_header_rejected(R"({"__metadata__":["pt"]})", 0,
                         {"'__metadata__' must be an object of strings, not an array"});
  expect_header_rejected(R"({"__metadata__":{"format":"pt","epoch":3}})", 0,
                         {"'__metadata__' value of 'epoch' must be a string, not an integer"});
}

TEST(SafetensorsCorrupt, ParserNamesTheSourceItIsGiven) {
  const std::string bytes = file_bytes("{\"w\":1}", 0);
  try {
    parse_safetensors_header({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
                             "shard-7");
    FAIL() << "expected dsa::Error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "shard-7: tensor 'w': entry must be a JSON object, not an integer");
  }
}

TEST(SafetensorsCorrupt, MisalignedTensorIsReadableAsBytesButRefusedAsView) {
  // Valid by the format, but an F32 at data offset 3 cannot be viewed as floats without
  // undefined behaviour; other writers may produce such files, so the view names the problem.
  TempDir dir;
  const fs::path path = dir / "model.safetensors";
  test::write_text_file(
      path, file_bytes(R"({"odd":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[0,3]},)"
                       R"("after_odd":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})",
                       11));
  const Checkpoint checkpoint(dir.path());
  EXPECT_EQ(checkpoint.bytes("after_odd").size(), 8u);
  try {
    checkpoint.view("after_odd");
    FAIL() << "expected dsa::Error";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("'after_odd'"), std::string::npos) << message;
    EXPECT_NE(message.find("not aligned"), std::string::npos) << message;
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace dsa
