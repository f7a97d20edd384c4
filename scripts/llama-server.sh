#!/usr/bin/env bash
# Prints the directory of a llama.cpp `llama-server` built with portable CPU flags, building it once,
# with `llama-quantize` beside it (local.requantize re-encodes a GGUF with it: src/aifabric/local/requantize.py).
#
# Where from: PyPI has no llama-server binary, but the sdist of the pinned llama-cpp-python vendors
# llama.cpp (vendor/llama.cpp, with tools/server). We build only the `llama-server` target from it.
# Why our own cache: a default (native) build of llama.cpp segfaults at the first decode on CPUs that
# advertise AVX-512/AMX (seen on these machines), so the key is the source version and the flags.
# The directory holds `llama-server` and the shared libraries it loads (RPATH $ORIGIN, so it can move).
#
# Two `make` runs at once build it once: the second waits on the lock and then finds the result.
# Progress (cmake's own lines) goes to stderr; only the directory goes to stdout.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
flags="$flags -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
flags="$flags -DCMAKE_BUILD_TYPE=Release -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON"
python="${1:-python3}"
targets="llama-server llama-quantize"
key=$(printf '%s %s %s' "$version" "$flags" "$targets" | sha256sum | cut -c1-12)
cache="${AIFABRIC_LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifabric/llama-server}"
dir="$cache/llama.cpp-$version-$key"

if [ -x "$dir/llama-server" ] && [ -x "$dir/llama-quantize" ]; then
  echo "$dir"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$dir.lock"
if ! flock -n 9; then
  echo "llama-server is being built by another process; waiting for it (lock: $dir.lock)..." >&2
  flock 9
fi
if [ -x "$dir/llama-server" ] && [ -x "$dir/llama-quantize" ]; then  # built by whoever held the lock
  echo "$dir"
  exit 0
fi

for tool in c++ cc make; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: building llama-server needs '$tool' (on Debian: apt-get install build-essential)" >&2
    exit 1
  fi
done
# cmake: the system's if it has one, else from PyPI into the venv of $python (as pip's own build of
# llama-cpp-python would fetch it).
cmake=$(command -v cmake || true)
if [ -z "$cmake" ]; then
  echo "no cmake on PATH: installing it from PyPI beside $python..." >&2
  "$python" -m pip install --quiet "cmake>=3.21" >&2
  cmake="$(dirname "$python")/cmake"
fi

tmp="$dir.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp/src"
echo "building llama.cpp's llama-server and llama-quantize from llama-cpp-python $version with portable CPU flags" \
  "(once; about 7 minutes on 2 cores; cached in $dir)..." >&2
"$python" -m pip download --quiet --no-deps --no-binary :all: -d "$tmp/sdist" "llama-cpp-python==$version" >&2
tar -xzf "$tmp"/sdist/*.tar.gz -C "$tmp/src" --strip-components=1
# shellcheck disable=SC2086  # $flags is a list of words
"$cmake" -S "$tmp/src/vendor/llama.cpp" -B "$tmp/build" $flags >"$tmp/configure.log" 2>&1 \
  || { tail -n 40 "$tmp/configure.log" >&2; echo "error: cmake configure failed (log above)" >&2; exit 1; }
# shellcheck disable=SC2086  # $targets is a list of words
"$cmake" --build "$tmp/build" --target $targets -j "$(nproc)" >&2
mkdir -p "$tmp/out"
cp -a "$tmp/build/bin/llama-server" "$tmp/build/bin/llama-quantize" "$tmp/build/bin/"*.so* "$tmp/out/"
"$tmp/out/llama-server" --version >/dev/null 2>&1 \
  || { echo "error: the built llama-server does not run:" >&2; "$tmp/out/llama-server" --version >&2; exit 1; }
rm -rf "$dir"
mv "$tmp/out" "$dir"
echo "llama-server built: $dir" >&2
echo "$dir"
