// `dsa data build` as a library call (train/data_build.h): documents round-trip through the
// shards with a BOS before each and nowhere else, the held-out split is disjoint from training and
// stable (across runs, thread counts and added files), synthetic tasks make up the requested share
// of training tokens and fit their lengths, and bad inputs are errors naming the file.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/test_util.h"
#include "text/tokenizer.h"
#include "train/data_build.h"
#include "train/data_dataset.h"

namespace dsa::train {
namespace {

namespace fs = std::filesystem;

fs::path tokenizer_path() { return test::data_dir() / "tokenizer/trained_small/tokenizer.json"; }

// Document d: a few sentences of words chosen by d, so documents differ and the small tokenizer
// splits them into many tokens. Odd lengths on purpose.
std::string document_text(int d) {
  static const char* const kWords[] = {"the",    "indexer", "reads",  "some",  "numbers", "cache",
                                       "sparse", "engine",  "select", "token", "quickly", "small"};
  std::string text;
  for (int s = 0; s < 3 + d % 4; ++s) {
    for (int w = 0; w < 5 + (d * 7 + s) % 9; ++w) {
      text += (w == 0 ? "" : " ") + std::string(kWords[(d * 5 + s * 3 + w * w) % 12]);
    }
    text += ". ";
  }
  return text + "Document " + std::string(1, char('A' + d % 26)) + ".\n";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

class DataBuildTest : public ::testing::Test {
 protected:
  DataBuildTest() : tokenizer_(text::Tokenizer::from_file(tokenizer_path())) {
    fs::create_directories(dir_ / "corpus/sub");
    for (int d = 0; d < kDocs; ++d) {
      const fs::path where = dir_ / (d % 3 == 0 ? "corpus/sub" : "corpus");
      test::write_text_file(where / fmt::format("doc{:02}.txt", d), document_text(d));
      texts_.insert(document_text(d));
    }
  }

  DataBuildOptions options(const std::string& out) const {
    DataBuildOptions o;
    o.inputs = {dir_ / "corpus"};
    o.tokenizer = tokenizer_path();
    o.output = dir_ / out;
    o.heldout_fraction = 0.2;
    o.synthetic_ratio = 0;
    o.seed = 3;
    o.threads = 1;
    return o;
  }

  // The documents of a split as (text, kind): each decoded from its tokens, after checking that
  // it starts with BOS and holds no other BOS.
  std::vector<std::pair<std::string, DocumentKind>> documents(const TokenDataset& data,
                                                              Split split) const {
    std::vector<std::pair<std::string, DocumentKind>> docs;
    const auto tokens = data.all(split);
    const auto starts = data.document_starts(split);
    const auto kinds = data.document_kinds(split);
    for (size_t d = 0; d < starts.size(); ++d) {
      const size_t begin = size_t(starts[d]);
      const size_t end = d + 1 < starts.size() ? size_t(starts[d + 1]) : tokens.size();
      EXPECT_EQ(tokens[begin], data.bos_id());
      const std::span<const int32_t> body = tokens.subspan(begin + 1, end - begin - 1);
      EXPECT_EQ(std::count(body.begin(), body.end(), data.bos_id()), 0) << "BOS inside doc " << d;
      docs.emplace_back(tokenizer_.decode(body), DocumentKind(kinds[d]));
      if (kinds[d] == int32_t(DocumentKind::kText)) {
        // Exactly the tokenizer's encoding of the file, without special tokens.
        EXPECT_EQ(std::vector<int32_t>(body.begin(), body.end()),
                  tokenizer_.encode(docs.back().first, false));
      }
    }
    return docs;
  }

  std::set<std::string> texts_of(const TokenDataset& data, Split split) const {
    std::set<std::string> out;
    for (const auto& [text, kind] : documents(data, split)) {
      if (kind == DocumentKind::kText) EXPECT_TRUE(out.insert(text).second) << "twice: " << text;
    }
    return out;
  }

  static constexpr int kDocs = 41;
  test::TempDir dir_;
  text::Tokenizer tokenizer_;
  std::set<std::string> texts_;
};

TEST_F(DataBuildTest, DocumentsRoundTripWithBosSeparators) {
  const DataBuildReport report = build_dataset(options("out"));
  EXPECT_EQ(report.files, kDocs);
  const TokenDataset data = TokenDataset::open(dir_ / "out");
  EXPECT_EQ(data.tokenizer_sha256(), report.tokenizer_sha256);
  EXPECT_EQ(data.vocab_size(), tokenizer_.vocab_size());
  EXPECT_EQ(data.bos_id(), *tokenizer_.bos_id());
  const std::set<std::string> train = texts_of(data, Split::kTrain);
  const std::set<std::string> heldout = texts_of(data, Split::kHeldout);
  EXPECT_EQ(train.size() + heldout.size(), size_t(kDocs));
  std::set<std::string> both = train;
  both.insert(heldout.begin(), heldout.end());
  EXPECT_EQ(both, texts_);  // every file once, in exactly one split
  EXPECT_FALSE(heldout.empty());
  EXPECT_GT(train.size(), heldout.size());
  EXPECT_EQ(report.total(Split::kHeldout).tokens, data.tokens(Split::kHeldout));
  EXPECT_EQ(report.train[int(DocumentKind::kPasskey)].documents, 0);

  // data.json lists each file with its split.
  const auto& info = data.info();
  EXPECT_EQ(info["documents"].size(), size_t(kDocs));
  std::set<std::string> listed_heldout;
  for (const auto& doc : info["documents"]) {
    if (doc["split"] == "heldout")
      listed_heldout.insert(test::read_text_file(doc["file"].get<std::string>()));
  }
  EXPECT_EQ(listed_heldout, heldout);
  // Held-out documents keep the input order, the order data.json lists the files in (by path
  // relative to the input: doc01.txt ... before sub/doc00.txt ...).
  std::vector<std::string> listed_order, stored_order;
  for (const auto& doc : info["documents"]) {
    if (doc["split"] == "heldout") {
      listed_order.push_back(test::read_text_file(doc["file"].get<std::string>()));
    }
  }
  for (const auto& [text, kind] : documents(data, Split::kHeldout)) stored_order.push_back(text);
  EXPECT_EQ(stored_order, listed_order);
  EXPECT_EQ(info["documents"][0]["file"], (dir_ / "corpus/doc01.txt").string());
  EXPECT_EQ(info["splits"]["train"]["kinds"]["text"]["documents"], train.size());
  EXPECT_EQ(info["sources"][0]["files"], kDocs);
}

TEST_F(DataBuildTest, StableAcrossRunsAndThreadCounts) {
  DataBuildOptions a = options("a");
  DataBuildOptions b = options("b");
  b.threads = 3;
  a.synthetic_ratio = b.synthetic_ratio = 0.25;
  a.synthetic_lengths = b.synthetic_lengths = {256, 301};
  build_dataset(a);
  build_dataset(b);
  for (const char* file : {"train.safetensors", "heldout.safetensors"}) {
    EXPECT_EQ(test::read_text_file(dir_ / "a" / file), test::read_text_file(dir_ / "b" / file))
        << file;
  }
  // Another seed moves documents between the splits.
  DataBuildOptions c = options("c");
  c.seed = 4;
  build_dataset(c);
  const auto heldout_a = texts_of(TokenDataset::open(dir_ / "a"), Split::kHeldout);
  const auto heldout_c = texts_of(TokenDataset::open(dir_ / "c"), Split::kHeldout);
  EXPECT_NE(heldout_a, heldout_c);
}

TEST_F(DataBuildTest, AddingAFileMovesNoOtherDocument) {
  build_dataset(options("before"));
  test::write_text_file(dir_ / "corpus/added.txt", "An added document. It is new.\n");
  build_dataset(options("after"));
  std::set<std::string> before = texts_of(TokenDataset::open(dir_ / "before"), Split::kHeldout);
  std::set<std::string> after = texts_of(TokenDataset::open(dir_ / "after"), Split::kHeldout);
  after.erase("An added document. It is new.\n");
  EXPECT_EQ(before, after);
}

TEST_F(DataBuildTest, AtLeastOneDocumentOnEachSide) {
  DataBuildOptions o = options("tiny");
  o.heldout_fraction = 1e-9;
  build_dataset(o);
  EXPECT_EQ(TokenDataset::open(dir_ / "tiny").documents(Split::kHeldout), 1);
  o.heldout_fraction = 0.999999;
  build_dataset(o);
  EXPECT_EQ(TokenDataset::open(dir_ / "tiny").documents(Split::kTrain), 1);
  o.heldout_fraction = 0;
  build_dataset(o);
  EXPECT_EQ(TokenDataset::open(dir_ / "tiny").documents(Split::kHeldout), 0);
}

TEST_F(DataBuildTest, SyntheticTasksMakeUpTheirShare) {
  DataBuildOptions o = options("synth");
  o.synthetic_ratio = 0.5;
  o.synthetic_lengths = {256, 411};
  const DataBuildReport report = build_dataset(o);
  const TokenDataset data = TokenDataset::open(dir_ / "synth");
  const KindCount total = report.total(Split::kTrain);
  const int64_t real = report.train[int(DocumentKind::kText)].tokens;
  const int64_t synthetic = total.tokens - real;
  // At least ratio of the tokens, and it stops at the first document that gets there.
  EXPECT_GE(double(synthetic), 0.5 * double(total.tokens) - 1e-9);
  EXPECT_LT(synthetic - 411, real);
  for (DocumentKind kind :
       {DocumentKind::kPasskey, DocumentKind::kKeyValueRecall, DocumentKind::kNeedle}) {
    EXPECT_GT(report.train[int(kind)].documents, 0) << document_kind_name(kind);
    EXPECT_EQ(report.heldout[int(kind)].documents, 0) << document_kind_name(kind);
  }
  // Every synthetic document, BOS included, fits in one of the lengths and ends with its answer.
  const auto starts = data.document_starts(Split::kTrain);
  const auto kinds = data.document_kinds(Split::kTrain);
  int64_t longest = 0;
  for (size_t d = 0; d < starts.size(); ++d) {
    if (kinds[d] == int32_t(DocumentKind::kText)) continue;
    const int64_t end = d + 1 < starts.size() ? starts[d + 1] : data.tokens(Split::kTrain);
    longest = std::max(longest, end - starts[d]);
    EXPECT_LE(end - starts[d], 411);
  }
  EXPECT_GT(longest, 256);  // the longer length was used too
  for (const auto& [text, kind] : documents(data, Split::kTrain)) {
    if (kind == DocumentKind::kPasskey) EXPECT_NE(text.find("The pass key is"), std::string::npos);
    if (kind == DocumentKind::kNeedle) {
      EXPECT_NE(text.find("The special magic number for"), std::string::npos);
    }
  }
  // Held-out stays real text only and the same as without synthetic tasks.
  build_dataset(options("plain"));
  EXPECT_EQ(texts_of(data, Split::kHeldout),
            texts_of(TokenDataset::open(dir_ / "plain"), Split::kHeldout));
}

TEST_F(DataBuildTest, InputErrors) {
  DataBuildOptions o = options("err");
  o.inputs = {dir_ / "nowhere"};
  EXPECT_NE(error_of([&] { build_dataset(o); }).find("nowhere: no such file or folder"),
            std::string::npos);
  fs::create_directories(dir_ / "no_txt");
  test::write_text_file(dir_ / "no_txt/readme.md", "not a document");
  o.inputs = {dir_ / "no_txt"};
  EXPECT_NE(error_of([&] { build_dataset(o); }).find("the folder holds no .txt file"),
            std::string::npos);
  fs::create_directories(dir_ / "empty");
  test::write_text_file(dir_ / "empty/a.txt", "");
  test::write_text_file(dir_ / "empty/b.txt", " \n\n\t");
  o.inputs = {dir_ / "empty"};
  EXPECT_NE(error_of([&] { build_dataset(o); }).find("no text: all 2 input file(s) are empty"),
            std::string::npos);
  // An empty file among real ones is skipped and reported.
  o.inputs = {dir_ / "corpus", dir_ / "empty/a.txt"};
  EXPECT_EQ(build_dataset(o).skipped, std::vector<fs::path>{dir_ / "empty/a.txt"});

  fs::create_directories(dir_ / "bad");
  test::write_text_file(dir_ / "bad/ok.txt", "Fine text.\n");
  test::write_text_file(dir_ / "bad/latin1.txt", "caf\xE9 au lait\n");  // Latin-1 e-acute
  o.inputs = {dir_ / "bad"};
  EXPECT_NE(error_of([&] {
              build_dataset(o);
            }).find((dir_ / "bad/latin1.txt").string() + ": invalid UTF-8 at byte offset 3"),
            std::string::npos);
  test::write_text_file(dir_ / "bad/latin1.txt", "\xEF\xBB\xBFWith a byte-order mark.\n");
  EXPECT_NO_THROW(build_dataset(o));

  o = options("err");
  o.tokenizer = dir_ / "missing.json";
  EXPECT_NE(error_of([&] { build_dataset(o); }).find("missing.json"), std::string::npos);
  o = options("err");
  o.heldout_fraction = 1;
  EXPECT_NE(error_of([&] { build_dataset(o); }).find("--heldout-fraction must be in [0, 1)"),
            std::string::npos);
  o = options("err");
  o.synthetic_ratio = -0.1;
  EXPECT_NE(error_of([&] { build_dataset(o); }).find("--synthetic-ratio must be in [0, 1)"),
            std::string::npos);
  o = options("err");
  o.synthetic_ratio = 0.1;
  o.synthetic_lengths = {24};
  EXPECT_NE(error_of([&] { build_dataset(o); }).find("--synthetic-lengths 24: synthetic "),
            std::string::npos);
  o.inputs = {};
  EXPECT_NE(error_of([&] { build_dataset(o); }).find("no input"), std::string::npos);
}

TEST_F(DataBuildTest, FailureBeforeWritingKeepsTheOldDataSet) {
  build_dataset(options("out"));
  ASSERT_NO_THROW(TokenDataset::open(dir_ / "out"));
  DataBuildOptions o = options("out");
  o.synthetic_ratio = 0.1;
  o.synthetic_lengths = {24};  // fails after reading, before writing
  EXPECT_THROW(build_dataset(o), Error);
  // The failure came before any write: the old data set is intact.
  EXPECT_NO_THROW(TokenDataset::open(dir_ / "out"));
}

}  // namespace
}  // namespace dsa::train
