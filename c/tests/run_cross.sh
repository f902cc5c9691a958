#!/usr/bin/env bash
# The C kernel drivers (test_kernels.c, test_lutgemm.c) cross-compiled for
# another architecture and run under qemu-user: on aarch64 the NEON backend
# against scalar, bit for bit, on random and edge inputs.
#
#   bash c/tests/run_cross.sh aarch64
#
# Installs nothing: it needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian:
# gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user; .ci/run installs them).
# The drivers are built as by c/tests/Makefile, but in a directory of their
# own (the x86 objects of the Makefile stay untouched), optimized (-O2, qemu
# is slow) and with UndefinedBehaviorSanitizer when the cross toolchain has it
# (AddressSanitizer does not run under qemu-user).  Ends with one line
# "N passed, N failed" (checks of both drivers) and exits non-zero on any
# failure or if a driver could not be built or run.
set -uo pipefail

arch="${1:-aarch64}"
case "$arch" in
    aarch64)
        CC="${CROSS_CC:-aarch64-linux-gnu-gcc}"
        QEMU="${QEMU:-qemu-aarch64}"
        SYSROOT="${CROSS_SYSROOT:-/usr/aarch64-linux-gnu}"
        ISA_FILES=(softmax_neon.c packed_neon.c lutgemm_neon.c)
        ;;
    *)
        echo "run_cross.sh: unknown architecture '$arch' (supported: aarch64)" >&2
        echo "0 passed, 1 failed"
        exit 2
        ;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/.." && pwd)"
for tool in "$CC" "$QEMU"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "run_cross.sh: $tool not found (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)" >&2
        echo "0 passed, 1 failed"
        exit 2
    fi
done

build="$(mktemp -d "${TMPDIR:-/tmp}/exaq-cross-$arch.XXXXXX")"
trap 'rm -rf "$build"' EXIT

# the flags of setup.py's kernel files (-ffp-contract=off matters: the NEON
# kernels rely on it to keep separate multiplies and adds), plus debug info
FLAGS=(-std=c99 -O2 -g -ffp-contract=off -fno-math-errno -Wall -Wextra -Wno-unused-function -Werror)
SAN=(-fsanitize=undefined -fno-sanitize-recover=all)
if ! echo 'int main(void){return 0;}' | "$CC" "${SAN[@]}" -x c - -o "$build/san_probe" 2>/dev/null; then
    echo "note: $CC has no UBSan runtime here; building without sanitizers"
    SAN=()
fi

SRC=(dispatch.c threadpool.c softmax_driver.c softmax_scalar.c packed_scalar.c lutgemm_driver.c lutgemm_scalar.c "${ISA_FILES[@]}")
objs=()
for f in "${SRC[@]}"; do
    o="$build/${f%.c}.o"
    "$CC" "${FLAGS[@]}" "${SAN[@]}" -c "$src/$f" -o "$o" || { echo "0 passed, 1 failed"; exit 1; }
    objs+=("$o")
done

passed=0
failed=0
for driver in test_kernels test_lutgemm; do
    echo "== $driver ($arch, $QEMU)"
    if ! "$CC" "${FLAGS[@]}" "${SAN[@]}" "$here/$driver.c" "${objs[@]}" -lm -pthread -o "$build/$driver"; then
        failed=$((failed + 1))
        continue
    fi
    start=$(date +%s)
    "$QEMU" -L "$SYSROOT" "$build/$driver" >"$build/$driver.out" 2>"$build/$driver.err"
    rc=$?
    # the failures, capped (one bug can fail thousands of checks)
    head -n 40 "$build/$driver.err"
    grep -v '^[0-9]* passed, [0-9]* failed$' "$build/$driver.out"
    last="$(tail -n 1 "$build/$driver.out")"
    echo "$driver: $last (exit $rc, $(($(date +%s) - start)) s)"
    if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
        [ "$rc" -ne 0 ] && [ "${BASH_REMATCH[2]}" -eq 0 ] && failed=$((failed + 1)) # crashed after its summary
    else
        failed=$((failed + 1)) # crashed or killed before its summary
    fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
