// The token data set format (train/data_shards.h) and its reader (train/data_dataset.h): a split
// written and read back is the same, and every inconsistency in a data set folder is refused with
// a message naming the file. Also SHA-256, which fingerprints the tokenizer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/test_util.h"
#include "train/data_dataset.h"
#include "train/data_sha256.h"
#include "train/data_shards.h"

namespace dsa::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int32_t kBos = 0;
constexpr int64_t kVocab = 50;

// Train: three documents (text, passkey, text) of odd lengths; held-out: one text document.
SplitTokens sample_train() {
  SplitTokens split;
  split.append_document(kBos, std::vector<int32_t>{5, 6, 7}, DocumentKind::kText);
  split.append_document(kBos, std::vector<int32_t>{9, 49, 9, 9, 11}, DocumentKind::kPasskey);
  split.append_document(kBos, std::vector<int32_t>{}, DocumentKind::kText);
  return split;
}

SplitTokens sample_heldout() {
  SplitTokens split;
  split.append_document(kBos, std::vector<int32_t>{3, 2}, DocumentKind::kText);
  return split;
}

json data_json(const SplitTokens& train, const SplitTokens& heldout) {
  return {{"format", "dsa-token-dataset"},
          {"format_version", 1},
          {"tokenizer", {{"sha256", "ab12"}, {"vocab_size", kVocab}, {"bos_id", kBos}}},
          {"splits",
           {{"train", {{"tokens", train.tokens.size()}, {"documents", train.documents()}}},
            {"heldout", {{"tokens", heldout.tokens.size()}, {"documents", heldout.documents()}}}}}};
}

void write_dataset(const fs::path& dir, const SplitTokens& train, const SplitTokens& heldout,
                   const json& info) {
  write_split_file(dir / "train.safetensors", train);
  write_split_file(dir / "heldout.safetensors", heldout);
  test::write_text_file(dir / "data.json", info.dump());
}

void expect_open_error(const fs::path& dir, const std::string& needle) {
  try {
    TokenDataset::open(dir);
    ADD_FAILURE() << "expected an error containing: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(DataShards, AppendDocumentPutsBosAtEachStart) {
  const SplitTokens split = sample_train();
  EXPECT_EQ(split.tokens, (std::vector<int32_t>{0, 5, 6, 7, 0, 9, 49, 9, 9, 11, 0}));
  EXPECT_EQ(split.document_starts, (std::vector<int64_t>{0, 4, 10}));
  EXPECT_EQ(split.document_kinds, (std::vector<int32_t>{0, 1, 0}));
}

TEST(DataShards, KindAndSplitNames) {
  for (int k = 0; k < kDocumentKindCount; ++k) {
    EXPECT_EQ(parse_document_kind(document_kind_name(DocumentKind(k))), DocumentKind(k));
  }
  EXPECT_EQ(parse_document_kind("essay"), std::nullopt);
  EXPECT_EQ(split_file_name(Split::kTrain), "train.safetensors");
  EXPECT_EQ(split_file_name(Split::kHeldout), "heldout.safetensors");
}

TEST(DataShards, RoundTrip) {
  test::TempDir dir;
  const SplitTokens train = sample_train(), heldout = sample_heldout();
  write_dataset(dir.path(), train, heldout, data_json(train, heldout));
  TokenDataset data = TokenDataset::open(dir.path());
  EXPECT_EQ(data.vocab_size(), kVocab);
  EXPECT_EQ(data.bos_id(), kBos);
  EXPECT_EQ(data.tokenizer_sha256(), "ab12");
  EXPECT_EQ(data.max_token_id(), 49);
  EXPECT_EQ(data.tokens(Split::kTrain), 11);
  EXPECT_EQ(data.documents(Split::kTrain), 3);
  const auto all = data.all(Split::kTrain);
  EXPECT_EQ(std::vector<int32_t>(all.begin(), all.end()), train.tokens);
  const auto starts = data.document_starts(Split::kTrain);
  EXPECT_EQ(std::vector<int64_t>(starts.begin(), starts.end()), train.document_starts);
  const auto kinds = data.document_kinds(Split::kTrain);
  EXPECT_EQ(std::vector<int32_t>(kinds.begin(), kinds.end()), train.document_kinds);
  const auto held = data.all(Split::kHeldout);
  EXPECT_EQ(std::vector<int32_t>(held.begin(), held.end()), heldout.tokens);

  // Moving the data set keeps its spans valid: the mapping moves with it.
  const TokenDataset moved = std::move(data);
  EXPECT_EQ(moved.all(Split::kTrain)[5], 9);
}

TEST(DataShards, EmptyHeldoutSplit) {
  test::TempDir dir;
  const SplitTokens train = sample_train(), empty;
  write_dataset(dir.path(), train, empty, data_json(train, empty));
  const TokenDataset data = TokenDataset::open(dir.path());
  EXPECT_EQ(data.tokens(Split::kHeldout), 0);
  EXPECT_EQ(data.documents(Split::kHeldout), 0);
  EXPECT_TRUE(data.all(Split::kHeldout).empty());
}

TEST(DataShards, RefusesInconsistentFolders) {
  const SplitTokens train = sample_train(), heldout = sample_heldout();
  {
    test::TempDir dir;
    expect_open_error(dir.path(), "data.json: cannot read it");
    expect_open_error(dir / "missing", "no such data set folder");
  }
  {
    test::TempDir dir;
    json info = data_json(train, heldout);
    info["format_version"] = 2;
    write_dataset(dir.path(), train, heldout, info);
    expect_open_error(dir.path(), "format_version is 2, this build reads 1");
  }
  {
    test::TempDir dir;
    json info = data_json(train, heldout);
    info["tokenizer"].erase("sha256");
    write_dataset(dir.path(), train, heldout, info);
    expect_open_error(dir.path(), "missing key 'tokenizer.sha256'");
  }
  {
    test::TempDir dir;
    json info = data_json(train, heldout);
    info["splits"]["train"]["tokens"] = 12;
    write_dataset(dir.path(), train, heldout, info);
    expect_open_error(dir.path(), "holds 11 tokens in 3 documents, data.json says 12 in 3");
  }
  {
    test::TempDir dir;
    write_dataset(dir.path(), train, heldout, data_json(train, heldout));
    fs::remove(dir / "heldout.safetensors");
    expect_open_error(dir.path(), "the heldout split file is missing");
  }
  {
    test::TempDir dir;
    SplitTokens bad = train;
    bad.tokens[4] = 7;  // document 1 no longer starts with BOS
    write_dataset(dir.path(), bad, heldout, data_json(bad, heldout));
    expect_open_error(dir.path(), "document 1 starts with token 7, not the BOS token 0");
  }
  {
    test::TempDir dir;
    SplitTokens bad = train;
    bad.document_starts[2] = 3;  // not increasing
    write_dataset(dir.path(), bad, heldout, data_json(bad, heldout));
    expect_open_error(dir.path(), "document 2 starts at token 3, not increasing");
  }
  {
    test::TempDir dir;
    SplitTokens bad = train;
    bad.tokens[6] = int32_t(kVocab);
    write_dataset(dir.path(), bad, heldout, data_json(bad, heldout));
    expect_open_error(dir.path(), "token 6 is id 50, outside the vocabulary [0, 50)");
  }
  {
    test::TempDir dir;
    SplitTokens bad = train;
    bad.document_kinds[1] = 9;
    write_dataset(dir.path(), bad, heldout, data_json(bad, heldout));
    expect_open_error(dir.path(), "document 1 has kind 9");
  }
}

TEST(DataShards, TokenizerAndVocabularyChecks) {
  test::TempDir dir;
  const SplitTokens train = sample_train(), heldout = sample_heldout();
  const fs::path tokenizer = test::data_dir() / "tokenizer/trained_small/tokenizer.json";
  json info = data_json(train, heldout);
  info["tokenizer"]["sha256"] = sha256_file_hex(tokenizer);
  write_dataset(dir.path(), train, heldout, info);
  const TokenDataset data = TokenDataset::open(dir.path());
  EXPECT_NO_THROW(check_same_tokenizer(data, tokenizer));
  EXPECT_NO_THROW(check_vocabulary(data, 50));
  try {
    check_same_tokenizer(data, test::data_dir() / "tokenizer/tiny_tokenizer.json");
    ADD_FAILURE() << "a different tokenizer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer mismatch"), std::string::npos) << e.what();
  }
  try {
    check_vocabulary(data, 49);  // token 49 needs a vocabulary of 50
    ADD_FAILURE() << "token 49 accepted by a vocabulary of 49";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 49, outside the model's vocabulary of 49"),
              std::string::npos)
        << e.what();
  }
}

// FIPS 180-4 / NIST test vectors, and the block-boundary cases of the padding (55, 56, 64 bytes)
// against digests from coreutils' sha256sum.
TEST(Sha256, KnownDigests) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(55, 'a')),
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(sha256_hex(std::string(56, 'a')),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(sha256_hex(std::string(64, 'a')),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalUpdatesMatchOneShot) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += char('a' + i % 26);
  for (size_t piece : {1, 7, 63, 64, 65}) {
    Sha256 hash;
    for (size_t pos = 0; pos < text.size(); pos += piece) {
      hash.update(std::string_view(text).substr(pos, piece));
    }
    const auto digest = hash.finish();
    std::string hex;
    for (uint8_t b : digest) hex += fmt::format("{:02x}", b);
    EXPECT_EQ(hex, sha256_hex(text)) << "pieces of " << piece;
  }
}

TEST(Sha256, FileDigest) {
  // sha256sum tests/data/tokenizer/trained_small/tokenizer.json
  EXPECT_EQ(sha256_file_hex(test::data_dir() / "tokenizer/trained_small/tokenizer.json"),
            "bf4e3083ea8a85fb215271a913bd44c33553e982982ed4e1173036aa3bfc44da");
  EXPECT_THROW(sha256_file_hex("/nonexistent/file"), Error);
}

}  // namespace
}  // namespace dsa::train
