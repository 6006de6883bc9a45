#!/usr/bin/env bash
# ASan + UBSan run of the C++ mask ops (zsris_rt._maskops): build cpp_ext/*.cpp with the
# sanitizers into a temporary folder, run the maskops tests (tests/test_maskops*.py) against that
# build (never the normal one), then fuzz every entry point with malformed inputs
# (cpp_ext/fuzz_entry_points.py).
#
#   bash cpp_ext/sanitize.sh            # FUZZ_CALLS=10000 FUZZ_SEED=20261127 by default
#
# Needs g++ (with libasan/libubsan), pybind11, numpy, pytest and hypothesis. Leaves the repo as it
# was; the temporary folder is removed on exit (KEEP_SANITIZE_DIR=1 keeps it).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
cxx="${CXX:-g++}"
calls="${FUZZ_CALLS:-10000}"
seed="${FUZZ_SEED:-20261127}"
start=$SECONDS

work="$(mktemp -d "${TMPDIR:-/tmp}/zsris-sanitize.XXXXXX")"
cleanup() { if [[ "${KEEP_SANITIZE_DIR:-0}" != 1 ]]; then rm -rf "$work"; fi; }
trap cleanup EXIT

fail() { echo "sanitize: FAIL: $*" >&2; exit 1; }

# 1. The sanitized build.
suffix="$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
read -r -a includes <<<"$("$python" -m pybind11 --includes)"
libasan="$("$cxx" -print-file-name=libasan.so)"
libubsan="$("$cxx" -print-file-name=libubsan.so)"
[[ -f "$libasan" && -f "$libubsan" ]] || fail "$cxx has no libasan.so/libubsan.so"
package="$work/site/zsris_rt"
mkdir -p "$work/site"
cp -r "$repo/runtime" "$package"
if [[ -d "$repo/export" ]]; then cp -r "$repo/export" "$package/export"; fi
find "$package" \( -name '__pycache__' -o -name '_maskops*.so' -o -name '_maskops*.pyd' \) \
    -prune -exec rm -rf {} +
so="$package/_maskops$suffix"
echo "sanitize: building $so"
"$cxx" -std=c++17 -shared -fPIC -O1 -g -ffp-contract=off \
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
    "${includes[@]}" -I"$repo/cpp_ext" "$repo"/cpp_ext/*.cpp -o "$so" -pthread
echo "sanitize: built in $((SECONDS - start)) s"

# 2. The environment every later step runs in: the sanitized package first on the path.
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
export LD_PRELOAD="$libasan:$libubsan${LD_PRELOAD:+:$LD_PRELOAD}"
# Python leaks by design; a huge numpy request must be a MemoryError, not an ASan abort.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
unset ZSRIS_MASKOPS                 # the C++ ops must run, not their NumPy twins
export PYTHONDONTWRITEBYTECODE=1
export SANITIZED_MASKOPS="$so"

# Each Python process checks that it loaded the sanitized build, else fails loudly.
cat >"$work/site/sanitized_check.py" <<'EOF'
"""pytest plugin (-p sanitized_check): the run uses the sanitized _maskops, and no deadlines."""
import os

from hypothesis import settings

from zsris_rt import _maskops, maskops

expected = os.path.realpath(os.environ["SANITIZED_MASKOPS"])
if os.path.realpath(_maskops.__file__) != expected or maskops.implementation() != "c++":
    raise SystemExit(f"sanitize: FAIL: zsris_rt._maskops is {_maskops.__file__} "
                     f"({maskops.implementation()}), not the sanitized {expected}")
print(f"sanitize: using {_maskops.__file__}")
# The sanitizers slow every call down several times: no per-example deadline.
settings.register_profile("sanitize", deadline=None)
settings.load_profile("sanitize")
EOF

# 3. The maskops tests against the sanitized build.
echo "sanitize: tests"
cd "$repo"
"$python" -m pytest -q -p no:cacheprovider -p sanitized_check tests/test_maskops*.py \
    || fail "maskops tests under ASan/UBSan (see above)"

# 4. Fuzz every entry point; a crash leaves its input in last_call.txt.
echo "sanitize: fuzz ($calls calls, seed $seed)"
export FUZZ_LAST_CALL="$work/last_call.txt"
if ! "$python" "$repo/cpp_ext/fuzz_entry_points.py" "$calls" "$seed"; then
    if [[ -f "$FUZZ_LAST_CALL" ]]; then echo "sanitize: last call: $(cat "$FUZZ_LAST_CALL")" >&2; fi
    fail "fuzz of the entry points (see above)"
fi

echo "sanitize: PASS: ASan+UBSan build, maskops tests and $calls fuzz calls clean" \
    "in $((SECONDS - start)) s"
