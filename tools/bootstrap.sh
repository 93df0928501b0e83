#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine for torchship, used by every
# Makefile target: Debian packages, the .venv, and the native build
# (torchship._C, the C++ tests, torchship-server). A second run on a ready
# machine only checks stamps and takes seconds; a changed C++ file rebuilds
# incrementally (the CMake build directory build/native is kept).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }
# pip, quietly; on failure show its log (minus this machine's noise about local indexes) and stop.
pip_quiet() {
  local log rc=0; log=$(mktemp)
  .venv/bin/python -m pip --disable-pip-version-check "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    { grep -v 'is ignored' "$log" | tail -n 60; echo "pip $* failed with exit code $rc"; } >&2
    rm -f "$log"; return "$rc"
  fi
  rm -f "$log"
}

# --- Debian packages for the C++ side ---------------------------------------
APT_PACKAGES=(g++ cmake ninja-build python3-venv
  nlohmann-json3-dev libgtest-dev libboost-dev zlib1g-dev libcli11-dev libspdlog-dev
  libturbojpeg0-dev libpng-dev libexif-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libtcmalloc-minimal4 nginx-light wrk curl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python virtual environment ---------------------------------------------
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
req_hash=$(sha256sum tools/requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$req_hash" ]; then
  say "installing pinned Python packages (tools/requirements.txt)"
  pip_quiet install -r tools/requirements.txt
  .venv/bin/python -c "import torch, torchvision, onnxruntime, pybind11" # fail here, not later
  echo "$req_hash" > .venv/.requirements.sha256
fi

# --- Native build (scikit-build-core -> CMake -> build/native) --------------
# One build at a time in build/native (parallel `make` targets, several shells).
mkdir -p build
exec 9>build/.bootstrap.lock
# A caller that already holds the lock (`flock build/.bootstrap.lock tools/bootstrap.sh`) must not deadlock.
if ! flock -n 9; then
  grep -qz 'bootstrap.lock' "/proc/$PPID/cmdline" 2>/dev/null || flock 9
fi
native_hash=$( { cat pyproject.toml CMakeLists.txt tools/requirements.txt;
  find cmake cpp $(test -d serve && echo serve) -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.txt' -o -name '*.cmake' -o -name '*.in' -o -name '*.proto' \) -print0 2>/dev/null | sort -z | xargs -0 cat; } | sha256sum | cut -d' ' -f1)
if [ "$(cat build/native/.torchship.sha256 2>/dev/null)" != "$native_hash" ] || ! .venv/bin/python -c "import torchship._C" 2>/dev/null; then
  say "building torchship._C and the C++ tests (CMake, incremental)"
  pip_quiet install --no-build-isolation --no-deps -e .
  .venv/bin/python -c "import torchship._C"
  echo "$native_hash" > build/native/.torchship.sha256
fi
say "ready: $(.venv/bin/python -c 'import torch, torchship._C as C; print(f"torch {torch.__version__}, native runtime built with CUDA support: {C.with_cuda}, GPU visible: {C.cuda_available()}")')"
