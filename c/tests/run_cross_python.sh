#!/usr/bin/env bash
# The Python extension on aarch64, end to end, from an x86-64 host:
#  1. a sysroot of Debian's arm64 python3, libpython3-dev, python3-numpy,
#     python3-pytest and python3-hypothesis (with their dependency closure;
#     the suite of the host's apt sources, e.g. bookworm: Python 3.11),
#     fetched by apt-get with a private state directory (the host's apt and
#     dpkg configuration are not touched; no package is installed) and
#     unpacked with dpkg -x;
#  2. the Cython extension cross-built by setup.py (host Python and Cython,
#     CC=aarch64-linux-gnu-gcc, the sysroot's Python and NumPy headers);
#  3. a smoke subset of the pytest suite (tests/oracle.py as the reference)
#     run by Debian's arm64 python3 under qemu-aarch64, with the NEON backend
#     active and compared with scalar.
#
#   bash c/tests/run_cross_python.sh            (sysroot cached in $EXAQ_CROSS_ROOT)
#
# Needs: aarch64-linux-gnu-gcc, qemu-aarch64, dpkg, apt-get with access to a
# Debian bookworm mirror (first run only), and a host Python with numpy,
# Cython and setuptools (the package's build requirements).  Ends with
# pytest's summary; exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
root="${EXAQ_CROSS_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/exaq-cross-aarch64}"
sysroot="$root/sysroot"
PY_HOST="${PYTHON:-python3}"
CC_CROSS="${CROSS_CC:-aarch64-linux-gnu-gcc}"
QEMU="${QEMU:-qemu-aarch64}"
MIRROR_SOURCES="${MIRROR_SOURCES:-/etc/apt/sources.list.d/debian.sources}"

for tool in "$CC_CROSS" "$QEMU" dpkg apt-get; do
    command -v "$tool" >/dev/null 2>&1 || { echo "run_cross_python.sh: $tool not found" >&2; exit 2; }
done

# ---- 1. the arm64 sysroot (once) ----
if [ ! -e "$sysroot/.complete" ]; then
    echo "== building the arm64 sysroot in $sysroot"
    rm -rf "$root/apt" "$sysroot"
    mkdir -p "$root/apt/state/lists/partial" "$root/apt/cache/archives/partial" \
        "$root/apt/etc/sources.list.d" "$root/apt/etc/apt.conf.d" "$root/apt/etc/preferences.d" "$root/apt/log"
    touch "$root/apt/state/status" # an empty system: download the whole closure
    if [ -e "$MIRROR_SOURCES" ]; then
        cp "$MIRROR_SOURCES" "$root/apt/etc/sources.list.d/debian.sources"
    else
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            >"$root/apt/etc/sources.list.d/debian.sources"
    fi
    cat >"$root/apt/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
Dir::State "$root/apt/state";
Dir::State::status "$root/apt/state/status";
Dir::Cache "$root/apt/cache";
Dir::Etc "$root/apt/etc";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::Parts "$root/apt/etc/apt.conf.d";
Dir::Etc::TrustedParts "/etc/apt/trusted.gpg.d";
Dir::Log "$root/apt/log";
Debug::NoLocking "1";
EOF
    export APT_CONFIG="$root/apt/apt.conf"
    apt-get update -q
    apt-get install -q -y --download-only python3 libpython3-dev python3-numpy python3-pytest python3-hypothesis
    unset APT_CONFIG
    mkdir -p "$sysroot"
    for deb in "$root"/apt/cache/archives/*.deb; do dpkg -x "$deb" "$sysroot"; done
    # what the maintainer scripts would do: the BLAS/LAPACK alternatives numpy links to
    ln -sf blas/libblas.so.3 "$sysroot/usr/lib/aarch64-linux-gnu/libblas.so.3"
    ln -sf lapack/liblapack.so.3 "$sysroot/usr/lib/aarch64-linux-gnu/liblapack.so.3"
    touch "$sysroot/.complete"
fi
# the target's Python version (python3 -> python3.X) and NumPy headers (numpy 2: _core)
PYV="$(readlink "$sysroot/usr/bin/python3" | sed -n 's/^python\([0-9]*\.[0-9]*\)$/\1/p')"
[ -n "$PYV" ] && [ -x "$sysroot/usr/bin/python$PYV" ] || { echo "no arm64 python3 in $sysroot" >&2; exit 1; }
header="$(find "$sysroot/usr/lib/python3/dist-packages/numpy" -path '*/include/numpy/arrayobject.h' | head -n 1)"
[ -n "$header" ] || { echo "no arm64 numpy headers in $sysroot" >&2; exit 1; }
numpy_include="$(dirname "$(dirname "$header")")"
echo "target: Debian arm64 python$PYV, numpy headers $numpy_include"

# ---- 2. cross-build the extension ----
build="$(mktemp -d "${TMPDIR:-/tmp}/exaq-cross-py.XXXXXX")"
trap 'rm -rf "$build"' EXIT
echo "== cross-building exaq_cpu._core for aarch64 (setup.py, CC=$CC_CROSS)"
cp -r "$repo/src/exaq_cpu" "$build/exaq_cpu"
find "$build/exaq_cpu" -name '*.so' -delete
(
    cd "$repo"
    # setup.py finds the target from $CC (-dumpmachine) and so compiles
    # scalar + NEON; the sysroot's headers come before the host's (CFLAGS
    # precede the include directories setup.py adds).  The host Python's
    # sysconfig still names the x86-64 extension suffix: renamed below.
    CC="$CC_CROSS" LDSHARED="$CC_CROSS -shared -pthread" \
        CFLAGS="-I$sysroot/usr/include/python$PYV -I$sysroot/usr/include -I$numpy_include" LDFLAGS="" \
        "$PY_HOST" setup.py build_ext --build-temp "$build/tmp" --build-lib "$build/lib" >"$build/build.log" 2>&1 ||
        { cat "$build/build.log"; exit 1; }
)
built="$(find "$build/lib" -name '_core*.so' | head -n 1)"
[ -n "$built" ] || { cat "$build/build.log"; echo "no extension built" >&2; exit 1; }
kernels="$(grep -o 'c/[a-z0-9_]*\.c' "$build/build.log" | sort -u | tr '\n' ' ' || true)"
echo "kernel files compiled: $kernels"
case "$kernels" in *softmax_neon.c*) ;; *) echo "setup.py did not pick the NEON kernels" >&2; exit 1 ;; esac
case "$kernels" in *avx*) echo "setup.py compiled x86 kernels for aarch64" >&2; exit 1 ;; esac
file "$built" 2>/dev/null || true
cp "$built" "$build/exaq_cpu/_core.cpython-${PYV/./}-aarch64-linux-gnu.so"

# ---- 3. run under qemu ----
run_py() {
    PYTHONPATH="$build" PYTHONDONTWRITEBYTECODE=1 "$QEMU" -L "$sysroot" "$sysroot/usr/bin/python$PYV" "$@"
}
echo "== import under qemu-aarch64"
run_py -c "
import platform, exaq_cpu
print('machine', platform.machine(), '| backends', exaq_cpu.backends(), '| active', exaq_cpu.backend())
assert platform.machine() == 'aarch64'
assert exaq_cpu.backends() == ['scalar', 'neon'] and exaq_cpu.backend() == 'neon', exaq_cpu.backends()
"
echo "== pytest smoke subset under qemu-aarch64 (every test once per backend: scalar, neon)"
cd "$repo"
SMOKE=(
    "tests/test_softmax.py::test_lengths_around_vector_widths"
    "tests/test_softmax.py::test_simd_backends_match_scalar_bit_for_bit"
    "tests/test_softmax.py::test_masked_entries_and_rows"
    "tests/test_softmax.py::test_special_values"
    "tests/test_softmax.py::test_exact_softmax_against_float64"
    "tests/test_softmax.py::test_backend_selection"
    "tests/test_softmax.py::test_exact_ties_round_half_to_even"
    "tests/test_packed.py::test_pack_format_and_round_trip"
    "tests/test_packed.py::test_lutsum_against_float64"
    "tests/test_packed.py::test_packed_softmax_equals_float_output"
    "tests/test_packed.py::test_masks_lengths_and_bitmap"
    "tests/test_lutgemm.py::test_lut_gemm_matches_dequantized"
    "tests/test_lutgemm.py::test_backends_agree_bit_for_bit"
    "tests/test_lutgemm.py::test_preferred_table_per_backend"
)
run_py -m pytest -q -p no:cacheprovider "${SMOKE[@]}" "$@"
