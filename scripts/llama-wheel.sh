#!/usr/bin/env bash
# Prints the path of a llama-cpp-python wheel built with portable CPU flags, building it once.
#
# Why: a default (native) build of llama.cpp segfaults at the first decode on CPUs that advertise
# AVX-512/AMX (seen on these machines). pip's wheel cache does not key on CMAKE_ARGS, so a native
# wheel built once would be reused silently; we keep our own cache keyed by version and flags.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
python="${1:-python3}"
key=$(printf '%s %s' "$version" "$flags" | sha256sum | cut -c1-12)
dir="${AIFABRIC_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aifabric/wheels}/llama-cpp-python-$version-$key"
wheel=$(ls "$dir"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version with portable CPU flags (once; about 8 minutes on 2 cores)..." >&2
  tmp="$dir.tmp.$$"
  mkdir -p "$tmp"
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$python" -m pip wheel --no-deps --no-cache-dir -w "$tmp" "llama-cpp-python==$version" >&2
  mkdir -p "$dir"
  mv "$tmp"/llama_cpp_python-*.whl "$dir"/
  rm -rf "$tmp"
  wheel=$(ls "$dir"/llama_cpp_python-*.whl | head -n1)
fi
echo "$wheel"
