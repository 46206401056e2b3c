// `dsa train` end to end, on a micro model (tests/data/train_goldens/micro_config.json with a
// 300-token vocabulary) and a few kilobytes of generated text: determinism, exact resume after
// SIGKILL at random moments (before the first checkpoint, between checkpoints, inside a
// checkpoint write), loading the result for inference, bad input (exit 1, a message naming what
// is wrong, nothing lost), a write that fails while saving, the log and plot, and the warm-up and
// sparse stages.
//
// The runs that get killed or limited are started with fork/exec, not through a shell, so the
// signal reaches the trainer itself. A full disk is simulated with RLIMIT_FSIZE: a write past the
// limit fails with EFBIG (SIGXFSZ is ignored in the child, and ignored signals stay ignored across
// exec), which exercises the real write path without root, a mount or a test hook.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/safetensors.h"
#include "support/test_util.h"
#include "train/data_dataset.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Args = std::vector<std::string>;

constexpr int64_t kSteps = 12;

std::string shell_quote(const Args& args) {
  std::string out;
  for (const std::string& a : args) {
    std::string quoted = "'";
    for (char c : a) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += (out.empty() ? "" : " ") + quoted + "'";
  }
  return out;
}

// A command line split at spaces (the temporary paths have none).
Args words(const std::string& line) {
  Args out;
  for (size_t at = 0; at < line.size();) {
    const size_t end = std::min(line.find(' ', at), line.size());
    if (end > at) out.push_back(line.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

test::CommandResult run(const Args& args) { return test::run_dsa(shell_quote(args)); }

// Starts the dsa binary with `args`, stdout and stderr into `output`; with `file_size_limit`, every
// file it writes is limited to that many bytes (RLIMIT_FSIZE).
pid_t spawn(const Args& args, const fs::path& output,
            std::optional<rlim_t> file_size_limit = std::nullopt) {
  std::vector<std::string> full = {DSA_BINARY};
  full.insert(full.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : full) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string output_path = output.string();
  const pid_t pid = fork();
  if (pid == 0) {  // only async-signal-safe calls from here on
    const int fd = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(126);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    if (file_size_limit) {
      ::signal(SIGXFSZ, SIG_IGN);
      const rlimit limit{*file_size_limit, *file_size_limit};
      ::setrlimit(RLIMIT_FSIZE, &limit);
    }
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// The exit status, or 128 + the signal that ended it.
int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Polls until `ready()` holds, then SIGKILLs `pid` and reaps it. False when it ended by itself
// first (reaped too).
bool kill_when(pid_t pid, const std::function<bool()>& ready) {
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return false;
    if (ready()) {
      ::kill(pid, SIGKILL);
      EXPECT_EQ(wait_for(pid), 128 + SIGKILL);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// Every file below `dir`, by relative path, with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) {
      files[fs::relative(entry.path(), dir).string()] = test::read_text_file(entry.path());
    }
  }
  return files;
}

// Temporary files of an unfinished atomic write (".NAME.tmp.PID.N") in OUT or OUT/trainer.
std::vector<std::string> temp_files(const fs::path& out) {
  std::vector<std::string> found;
  for (const fs::path& dir : {out, out / "trainer"}) {
    std::error_code error;
    for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
      const std::string name = it->path().filename().string();
      if (name.starts_with(".") && name.find(".tmp.") != std::string::npos) found.push_back(name);
    }
  }
  return found;
}

std::vector<nlohmann::json> read_log(const fs::path& path) {
  std::vector<nlohmann::json> lines;
  const std::string text = test::read_text_file(path);
  size_t begin = 0;
  while (begin < text.size()) {
    const size_t end = text.find('\n', begin);
    EXPECT_NE(end, std::string::npos) << path << ": the last line is not terminated";
    if (end == std::string::npos) break;
    lines.push_back(nlohmann::json::parse(text.substr(begin, end - begin)));
    begin = end + 1;
  }
  return lines;
}

std::vector<double> losses(const std::vector<nlohmann::json>& log) {
  std::vector<double> out;
  for (const nlohmann::json& line : log) out.push_back(line.at("loss").get<double>());
  return out;
}

std::vector<int64_t> steps(const std::vector<nlohmann::json>& log) {
  std::vector<int64_t> out;
  for (const nlohmann::json& line : log) out.push_back(line.at("step").get<int64_t>());
  return out;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

size_t log_lines(const fs::path& log) {
  std::error_code error;
  return fs::exists(log, error) ? count(test::read_text_file(log), "\n") : 0;
}

int64_t checkpoint_step(const fs::path& out) {
  return nlohmann::json::parse(test::read_text_file(out / "trainer/state.json"))
      .at("step")
      .get<int64_t>();
}

// Pseudo-words from syllables, so that BPE keeps finding merges up to a few hundred tokens.
std::string generated_text(uint32_t seed, int words) {
  static const char* kSyllables[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo",
                                     "ze", "pa", "qu", "ex", "or", "an", "th", "is"};
  std::mt19937 rng(seed);
  std::string text;
  for (int w = 0; w < words; ++w) {
    const int syllables = 1 + int(rng() % 3);
    for (int s = 0; s < syllables; ++s) text += kSyllables[rng() % 16];
    text += w % 11 == 10 ? ". " : " ";
  }
  return text + "\n";
}

class TrainCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    const fs::path root = dir_->path();
    fs::create_directories(root / "corpus");
    Args files;
    for (int d = 0; d < 10; ++d) {
      const fs::path file = root / "corpus" / ("doc" + std::to_string(d) + ".txt");
      test::write_text_file(file, generated_text(uint32_t(d + 1), 150 + 25 * d));
      files.push_back(file.string());
    }
    for (int vocab : {300, 400}) {
      Args tokenizer = words(fmt::format("tokenizer train --vocab-size {} -o {}/tok{}.json -f",
                                         vocab, root.string(), vocab));
      tokenizer.insert(tokenizer.end(), files.begin(), files.end());
      const auto r = run(tokenizer);
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    build_data(root / "corpus", "tok300.json", "data", "0.2");
    build_data(root / "corpus", "tok400.json", "data400", "0.2");
    build_data(root / "corpus", "tok300.json", "data_no_heldout", "0");
    fs::create_directories(root / "tiny");
    test::write_text_file(root / "tiny/a.txt", "Hi.\n");
    build_data(root / "tiny", "tok300.json", "data_tiny", "0");

    nlohmann::json config = nlohmann::json::parse(
        test::read_text_file(test::data_dir() / "train_goldens/micro_config.json"));
    config["vocab_size"] = 300;
    test::write_text_file(root / "config.json", config.dump(2));
    config["intermediate_size"] = 96;  // another layout: its optimizer state cannot be resumed
    test::write_text_file(root / "other_config.json", config.dump(2));

    // The uninterrupted run every other run is compared with.
    const pid_t pid = spawn(train_args(reference(), reference_log(), 3), root / "reference.err");
    ASSERT_EQ(wait_for(pid), 0) << test::read_text_file(root / "reference.err");
    const std::vector<nlohmann::json> log = read_log(reference_log());
    reference_losses_ = losses(log);
    ASSERT_EQ(reference_losses_.size(), size_t(kSteps));
    step_seconds_ = log.back().at("elapsed_s").get<double>() / double(kSteps);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  static void build_data(const fs::path& corpus, const std::string& tokenizer,
                         const std::string& out, const std::string& heldout) {
    const auto r = run({"data", "build", "-i", corpus.string(), "--tokenizer",
                        (dir_->path() / tokenizer).string(), "-o", (dir_->path() / out).string(),
                        "--heldout-fraction", heldout, "--synthetic-ratio", "0", "--seed", "3"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  static fs::path path(const std::string& name) { return dir_->path() / name; }
  static fs::path reference() { return path("reference"); }
  static fs::path reference_log() { return path("reference.jsonl"); }

  // The reference run's flags, into `out` with `log`; `save_every` does not change the numbers.
  static Args train_args(const fs::path& out, const fs::path& log, int save_every) {
    return words(fmt::format(
        "train --init {} --data {} -o {} --log {} --plot {}.svg --steps {} --save-every {} "
        "--batch 2 --seq 32 --lr 3e-3 --warmup 2 --eval-every 4 --eval-windows 2 -t 2",
        path("config.json").string(), path("data").string(), out.string(), log.string(),
        log.string(), kSteps, save_every));
  }

  static Args with(Args args, const Args& more) {
    args.insert(args.end(), more.begin(), more.end());
    return args;
  }

  // `args` with `flag` given `value` (CLI11 refuses a flag given twice).
  static Args set(Args args, const std::string& flag, const std::string& value) {
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == flag) {
        args[i + 1] = value;
        return args;
      }
    }
    return with(args, {flag, value});
  }

  // `out` with its log resumed to the end matches the reference exactly.
  static void expect_resumes_exactly(const fs::path& out, const fs::path& log, int save_every) {
    const fs::path err = out.string() + ".resume.err";
    const int status = wait_for(spawn(with(train_args(out, log, save_every), {"--resume"}), err));
    ASSERT_EQ(status, 0) << test::read_text_file(err);
    const std::vector<nlohmann::json> lines = read_log(log);
    std::vector<int64_t> want_steps(kSteps);
    for (int64_t i = 0; i < kSteps; ++i) want_steps[size_t(i)] = i + 1;
    EXPECT_EQ(steps(lines), want_steps) << "steps missing or repeated in the resumed log";
    EXPECT_EQ(losses(lines), reference_losses_);
    EXPECT_EQ(test::read_text_file(out / "model.safetensors"),
              test::read_text_file(reference() / "model.safetensors"));
    EXPECT_EQ(checkpoint_step(out), kSteps);
    EXPECT_EQ(temp_files(out), std::vector<std::string>{}) << "stale temporary files";
  }

  static test::TempDir* dir_;
  static double step_seconds_;  // wall time per step of the reference, checkpoints included
  static std::vector<double> reference_losses_;
};

test::TempDir* TrainCli::dir_ = nullptr;
double TrainCli::step_seconds_ = 0.0;
std::vector<double> TrainCli::reference_losses_;

TEST_F(TrainCli, SameSeedSameLossesAndWeights) {
  const auto r = run(train_args(path("again"), path("again.jsonl"), 3));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(losses(read_log(path("again.jsonl"))), reference_losses_);
  EXPECT_EQ(test::read_text_file(path("again/model.safetensors")),
            test::read_text_file(reference() / "model.safetensors"));
  EXPECT_EQ(snapshot(path("again/trainer")).size(), 2u);  // state.json and one optimizer file
  // The curve actually moves: a run that did not train would also repeat itself.
  EXPECT_LT(reference_losses_.back(), reference_losses_.front());
}

TEST_F(TrainCli, ResumesExactlyAfterSigkillBeforeTheFirstCheckpoint) {
  const fs::path out = path("early"), log = path("early.jsonl");
  const pid_t pid = spawn(train_args(out, log, 3), path("early.err"));
  // Step 1 is logged; the first checkpoint comes at step 3.
  ASSERT_TRUE(kill_when(pid, [&] { return log_lines(log) >= 1; }))
      << "the run ended before it could be killed";
  ASSERT_FALSE(fs::exists(out / "trainer/state.json")) << "killed too late for this case";
  expect_resumes_exactly(out, log, 3);
}

// A random moment, but always inside the run: after the log line of a random step, plus a random
// part of a step, so that the kill lands in a step, in a checkpoint write or between them.
TEST_F(TrainCli, ResumesExactlyAfterSigkillAtRandomMoments) {
  std::mt19937 rng(20251202);
  std::uniform_int_distribution<int> after_step(2, int(kSteps) - 3);  // 3 steps left
  std::uniform_real_distribution<double> part_of_a_step(0.0, 1.0);
  int resumed_mid_run = 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const int step = after_step(rng);
    const auto delay = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(part_of_a_step(rng) * step_seconds_));
    SCOPED_TRACE(fmt::format("attempt {}: killed {:.1f} ms after step {}", attempt,
                             std::chrono::duration<double, std::milli>(delay).count(), step));
    const fs::path out = path("random" + std::to_string(attempt));
    const fs::path log = out.string() + ".jsonl";
    const pid_t pid = spawn(train_args(out, log, 3), out.string() + ".err");
    std::optional<Clock::time_point> deadline;
    ASSERT_TRUE(kill_when(pid, [&] {
      if (!deadline && log_lines(log) >= size_t(step)) deadline = Clock::now() + delay;
      return deadline && Clock::now() >= *deadline;
    })) << "the run ended before it could be killed";
    if (fs::exists(out / "trainer/state.json") && checkpoint_step(out) < kSteps) ++resumed_mid_run;
    expect_resumes_exactly(out, log, 3);
  }
  EXPECT_GE(resumed_mid_run, 2) << "too few kills left a checkpoint to resume from";
}

TEST_F(TrainCli, ResumesExactlyAfterSigkillInsideACheckpointWrite) {
  const fs::path out = path("mid_save"), log = path("mid_save.jsonl");
  // A checkpoint every step, killed as soon as one of its files is half-written, once a few
  // checkpoints exist (so that the resume has something to continue from).
  const pid_t pid = spawn(train_args(out, log, 1), path("mid_save.err"));
  ASSERT_TRUE(kill_when(pid, [&] {
    return !temp_files(out).empty() && fs::exists(out / "trainer/state.json") &&
           checkpoint_step(out) >= 3;
  })) << "no checkpoint write was caught in progress";
  EXPECT_GE(checkpoint_step(out), 3);
  expect_resumes_exactly(out, log, 1);
}

TEST_F(TrainCli, TheTrainedFolderRunsAndBenchmarks) {
  const auto generated = run(
      {"run", "-m", reference().string(), "-p", "kalo mine", "-n", "5", "--temp", "0", "-t", "2"});
  EXPECT_EQ(generated.exit_code, 0) << generated.err;
  EXPECT_FALSE(generated.out.empty());
  const auto bench = run({"bench", "-m", reference().string(), "-d", "0", "-p", "16", "-n", "4",
                          "-r", "1", "-t", "2"});
  EXPECT_EQ(bench.exit_code, 0) << bench.err;
}

TEST_F(TrainCli, LogLinesHaveTheDocumentedKeys) {
  // The run's last line reports the precision and the peak RSS.
  const std::string err = test::read_text_file(path("reference.err"));
  EXPECT_NE(err.find("fp32 products; peak RSS "), std::string::npos) << err;
  const std::vector<nlohmann::json> lines = read_log(reference_log());
  ASSERT_EQ(lines.size(), size_t(kSteps));
  const std::set<std::string> keys = {"step",   "loss",         "lr",        "grad_norm",
                                      "tokens", "tokens_per_s", "elapsed_s", "peak_rss_bytes"};
  for (const nlohmann::json& line : lines) {
    std::set<std::string> got;
    for (auto it = line.begin(); it != line.end(); ++it) got.insert(it.key());
    std::set<std::string> want = keys;
    const int64_t step = line.at("step").get<int64_t>();
    if (step % 4 == 0) want.insert("heldout_loss");  // --eval-every 4; 12 is also the last
    EXPECT_EQ(got, want) << line.dump();
    EXPECT_EQ(line.at("tokens").get<int64_t>(), step * 2 * 32);
    EXPECT_GT(line.at("peak_rss_bytes").get<int64_t>(), int64_t(1) << 20) << line.dump();
    for (const std::string& key : want) {
      EXPECT_TRUE(std::isfinite(line.at(key).get<double>())) << key << " in " << line.dump();
    }
  }
}

// Whether `svg` is well-formed XML as far as a plot needs: every element closed in order, one
// root, quoted attribute values.
bool well_formed(const std::string& svg, std::string& root) {
  std::vector<std::string> open;
  int roots = 0;
  for (size_t at = svg.find('<'); at != std::string::npos; at = svg.find('<', at + 1)) {
    if (svg.compare(at, 2, "<?") == 0) {
      at = svg.find("?>", at);
      if (at == std::string::npos) return false;
      continue;
    }
    const bool closing = svg.compare(at, 2, "</") == 0;
    size_t end = at + 1;
    char quote = 0;
    for (; end < svg.size() && (quote || svg[end] != '>'); ++end) {
      if (quote && svg[end] == quote)
        quote = 0;
      else if (!quote && (svg[end] == '"' || svg[end] == '\''))
        quote = svg[end];
    }
    if (end >= svg.size()) return false;
    const size_t name_begin = at + (closing ? 2 : 1);
    const size_t name_end = svg.find_first_of(" \t\n/>", name_begin);
    const std::string name = svg.substr(name_begin, name_end - name_begin);
    if (name.empty()) return false;
    if (closing) {
      if (open.empty() || open.back() != name) return false;
      open.pop_back();
    } else if (svg[end - 1] != '/') {
      if (open.empty()) ++roots, root = name;
      open.push_back(name);
    }
    at = end;
  }
  return open.empty() && roots == 1;
}

TEST_F(TrainCli, PlotHasTrainingAndHeldoutCurves) {
  const std::string svg = test::read_text_file(reference_log().string() + ".svg");
  std::string root;
  EXPECT_TRUE(well_formed(svg, root));
  EXPECT_EQ(root, "svg");
  EXPECT_NE(svg.find(">training loss<"), std::string::npos);
  EXPECT_NE(svg.find(">held-out loss<"), std::string::npos);
  ASSERT_EQ(count(svg, "<polyline points=\""), 2u);
  // One vertex per logged step, one per evaluation (steps 4, 8, 12).
  const size_t first = svg.find("<polyline points=\"");
  const size_t second = svg.find("<polyline points=\"", first + 1);
  auto vertices = [&](size_t at) {
    const size_t begin = svg.find('"', at) + 1;
    return count(svg.substr(begin, svg.find('"', begin) - begin), ",");
  };
  EXPECT_EQ(vertices(first), size_t(kSteps));
  EXPECT_EQ(vertices(second), 3u);
}

// A bad run must fail with exit status 1 and `message`, create no output folder and leave an
// existing log untouched.
void expect_bad_run(const Args& args, const fs::path& out, const fs::path& log,
                    const std::string& message) {
  test::write_text_file(log, "an earlier log\n");
  const auto r = run(args);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("dsa: error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out)) << "a failed run left " << out;
  EXPECT_EQ(test::read_text_file(log), "an earlier log\n") << "a failed run changed the log";
}

Args bad_args(const fs::path& root, const std::string& data, const Args& more = {}) {
  Args args = words(fmt::format(
      "train --init {}/config.json --data {}/{} -o {}/bad --log {}/bad.jsonl --steps 2 --batch 2 "
      "--seq 32 -t 2",
      root.string(), root.string(), data, root.string(), root.string()));
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

TEST_F(TrainCli, BadInputIsAClearErrorThatLosesNothing) {
  const fs::path root = dir_->path(), out = root / "bad", log = root / "bad.jsonl";
  expect_bad_run(bad_args(root, "no_such_data", {}), out, log,
                 (root / "no_such_data").string() + ": no such data set folder");
  expect_bad_run(bad_args(root, "data_tiny", {}), out, log,
                 "the train split of " + (root / "data_tiny").string() + " has ");
  expect_bad_run(bad_args(root, "data_tiny", {}), out, log, "fewer than the sequence length 32");
  // The 400-token tokenizer's data really holds ids past the config's 300.
  ASSERT_GE(train::TokenDataset::open(root / "data400").max_token_id(), 300);
  expect_bad_run(bad_args(root, "data400", {}), out, log, "beyond the model's vocabulary of 300");
  expect_bad_run(TrainCli::set(bad_args(root, "data"), "--seq", "65"), out, log,
                 "--seq 65 is beyond the model's max_position_embeddings (64)");
  expect_bad_run(bad_args(root, "data", {"--stage", "warmup"}), out, log,
                 "--init must be its folder");
}

TEST_F(TrainCli, HeldoutLessDataTrainsWithoutEvaluation) {
  const auto r =
      run(set(bad_args(dir_->path(), "data_no_heldout"), "-o", path("no_heldout").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("dsa: warning: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no held-out"), std::string::npos) << r.err;
  for (const nlohmann::json& line : read_log(path("bad.jsonl"))) {
    EXPECT_FALSE(line.contains("heldout_loss")) << line.dump();
  }
}

TEST_F(TrainCli, ResumeWithAnotherModelOrSettingsKeepsTheCheckpoint) {
  const fs::path out = path("mismatch"), log = path("mismatch.jsonl");
  fs::copy(reference(), out, fs::copy_options::recursive);
  fs::copy_file(reference_log(), log);
  const auto before = snapshot(out);
  const std::string log_before = test::read_text_file(log);
  Args args = with(train_args(out, log, 3), {"--resume"});
  args[2] = path("other_config.json").string();  // --init
  auto r = run(args);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("does not match"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("intermediate_size"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(out), before);
  EXPECT_EQ(test::read_text_file(log), log_before);

  r = run(set(with(train_args(out, log, 3), {"--resume"}), "--lr", "1e-3"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--resume with lr = 0.001, but the checkpoint was trained with 0.003"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(snapshot(out), before);
  EXPECT_EQ(test::read_text_file(log), log_before);

  // bf16 compute changes the numbers, so it is a resume setting too.
  r = run(with(train_args(out, log, 3), {"--resume", "--precision", "bf16"}));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--resume with precision = \"bf16\", but the checkpoint was trained with "
                       "\"fp32\""),
            std::string::npos)
      << r.err;
  EXPECT_EQ(snapshot(out), before);
  r = run(with(train_args(out, log, 3), {"--precision", "fp16"}));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--precision: expected fp32 or bf16, got \"fp16\""), std::string::npos)
      << r.err;

  // Without --resume an existing checkpoint is never overwritten.
  r = run(train_args(out, log, 3));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("already holds a training checkpoint"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(out), before);
  EXPECT_EQ(test::read_text_file(log), log_before);

  // The same config under another path resumes: only the model it describes matters.
  fs::copy_file(path("config.json"), path("config_copy.json"));
  args[2] = path("config_copy.json").string();
  r = run(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(snapshot(out)["model.safetensors"], before.at("model.safetensors"));
}

// A checkpoint written before --precision existed has no "precision" setting: it was fp32.
TEST_F(TrainCli, CheckpointFromBeforePrecisionResumesAsFp32) {
  const fs::path out = path("before_precision"), log = path("before_precision.jsonl");
  fs::copy(reference(), out, fs::copy_options::recursive);
  fs::copy_file(reference_log(), log);
  nlohmann::json state = nlohmann::json::parse(test::read_text_file(out / "trainer/state.json"));
  ASSERT_EQ(state.at("settings").erase("precision"), size_t(1));
  test::write_text_file(out / "trainer/state.json", state.dump(2));
  auto r = run(with(train_args(out, log, 3), {"--resume", "--precision", "bf16"}));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--resume with precision = \"bf16\", but the checkpoint was trained with "
                       "\"fp32\""),
            std::string::npos)
      << r.err;
  r = run(with(train_args(out, log, 3), {"--resume"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(TrainCli, NonFiniteLossStopsAndKeepsTheLastCheckpoint) {
  const fs::path out = path("diverged"), log = path("diverged.jsonl");
  Args args = words(fmt::format(
      "train --init {} --data {} -o {} --log {} --steps 6 --save-every 1 --batch 2 --seq 32 "
      "--lr 1e30 -t 2",
      path("config.json").string(), path("data").string(), out.string(), log.string()));
  auto r = run(args);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(" at step 2: stopping"), std::string::npos) << r.err;
  ASSERT_EQ(checkpoint_step(out), 1);
  EXPECT_EQ(steps(read_log(log)), std::vector<int64_t>{1});
  EXPECT_EQ(temp_files(out), std::vector<std::string>{});
  // Resuming it diverges again at the same step and changes nothing, byte for byte.
  const auto before = snapshot(out);
  const std::string log_before = test::read_text_file(log);
  args.push_back("--resume");
  r = run(args);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(" at step 2: stopping"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(out), before);
  EXPECT_EQ(test::read_text_file(log), log_before);
}

TEST_F(TrainCli, AFailedCheckpointWriteKeepsThePreviousOne) {
  const fs::path out = path("full"), log = path("full.jsonl");
  // A first checkpoint, then the run is killed, between saves: state.json lands first, then the
  // model files, so the checkpoint is whole once the model's step is state.json's (a kill in the
  // middle of the model files' writes made this test flaky under load).
  const pid_t pid = spawn(train_args(out, log, 3), path("full.err"));
  ASSERT_TRUE(kill_when(pid, [&] {
    try {
      if (!fs::exists(out / "trainer/state.json") || !fs::exists(out / "config.json")) return false;
      const SafetensorsFile model(out / "model.safetensors");
      const auto step = model.metadata().find("step");
      return step != model.metadata().end() &&
             step->second == std::to_string(checkpoint_step(out)) && temp_files(out).empty();
    } catch (const std::exception&) {
      return false;  // a file replaced while it was read: poll again
    }
  }));
  const int64_t saved = checkpoint_step(out);
  ASSERT_LT(saved, kSteps);
  const auto before = snapshot(out);
  // Resumed where no file may grow past half the optimizer file: its next save fails.
  uint64_t optimizer_bytes = 0;
  for (const auto& [name, bytes] : before) {
    if (name.starts_with("trainer/optimizer-")) optimizer_bytes = bytes.size();
  }
  ASSERT_GT(optimizer_bytes, before.at("model.safetensors").size() * 2);
  const fs::path err = path("full_limited.err");
  const int status = wait_for(
      spawn(with(train_args(out, log, 3), {"--resume"}), err, rlim_t(optimizer_bytes / 2)));
  const std::string message = test::read_text_file(err);
  EXPECT_EQ(status, 1) << message;
  EXPECT_NE(message.find("dsa: error: "), std::string::npos) << message;
  EXPECT_NE(message.find("File too large"), std::string::npos) << message;
  EXPECT_NE(message.find("checkpoint of step " + std::to_string(saved)), std::string::npos)
      << message;
  EXPECT_EQ(snapshot(out), before) << "the failed save changed the previous checkpoint";
  // With room again it resumes from that checkpoint as if nothing had happened.
  expect_resumes_exactly(out, log, 3);
}

TEST_F(TrainCli, WarmupTrainsOnlyTheIndexersThenSparseRuns) {
  const fs::path warm = path("warm"), sparse = path("sparse");
  // A large weight decay: were the frozen tensors in the optimizer, decay alone would move them
  // past bf16 rounding within three steps (their gradient is zero either way).
  auto r = run(words(fmt::format(
      "train --stage warmup --init {} --data {} -o {} --log {} --steps 3 --batch 2 --seq 32 "
      "--lr 1e-2 --weight-decay 1 -t 2",
      reference().string(), path("data").string(), warm.string(), path("warm.jsonl").string())));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<nlohmann::json> warm_log = read_log(path("warm.jsonl"));
  for (const nlohmann::json& line : warm_log) {
    EXPECT_GT(line.at("loss").get<double>(), 0.0);  // the indexer KL
  }
  // The last step is evaluated: the stages that train the indexer log its held-out recall.
  ASSERT_FALSE(warm_log.empty());
  const double warm_recall = warm_log.back().at("heldout_recall").get<double>();
  EXPECT_GT(warm_recall, 0.0);
  EXPECT_LE(warm_recall, warm_log.back().at("heldout_oracle_recall").get<double>() + 1e-6);
  const SafetensorsFile before(reference() / "model.safetensors");
  const SafetensorsFile after(warm / "model.safetensors");
  ASSERT_EQ(before.tensors().size(), after.tensors().size());
  int indexer_tensors = 0;
  for (const TensorInfo& t : before.tensors()) {
    const TensorInfo* u = after.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    const std::span<const uint8_t> a = before.bytes(t), b = after.bytes(*u);
    const bool same = std::equal(a.begin(), a.end(), b.begin(), b.end());
    if (t.name.find(".indexer.") != std::string::npos) {
      ++indexer_tensors;
      EXPECT_FALSE(same) << t.name << " did not train";
    } else {
      EXPECT_TRUE(same) << t.name << " changed in the indexer warm-up";
    }
  }
  EXPECT_GT(indexer_tensors, 0);

  r = run(words(fmt::format(
      "train --stage sparse --init {} --data {} -o {} --log {} --steps 2 --batch 2 --seq 32 -t 2",
      warm.string(), path("data").string(), sparse.string(), path("sparse.jsonl").string())));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<nlohmann::json> lines = read_log(path("sparse.jsonl"));
  ASSERT_EQ(lines.size(), 2u);
  for (const nlohmann::json& line : lines) {
    EXPECT_TRUE(std::isfinite(line.at("loss").get<double>()));
    EXPECT_GT(line.at("indexer_loss").get<double>(), 0.0);
  }
  EXPECT_GT(lines.back().at("heldout_recall").get<double>(), 0.0);
  EXPECT_FALSE(read_log(reference_log()).back().contains("heldout_recall"));  // dense stage
  EXPECT_TRUE(fs::exists(sparse / "model.safetensors"));
}

}  // namespace
}  // namespace dsa
