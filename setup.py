"""Build of the exaq_cpu extension.

The package is built for the baseline ISA of the target; only the kernel files
named ``*_avx2.c`` / ``*_avx512.c`` get SIMD code-generation flags, and the
dispatch table picks among them at run time.  Never ``-march=native``.
x86-64 builds scalar + AVX2 + AVX-512, aarch64 scalar + NEON (baseline, no
flags), anything else scalar only; see target_machine() for cross builds.
"""
import os
import platform
import shlex
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.modified import newer_group  # setuptools >= 69
except ImportError:  # older setuptools (pyproject allows >= 64)
    from distutils.dep_util import newer_group

ROOT = Path(__file__).parent
C_DIR = "c"



def target_machine():
    """The architecture the extension is built for, which in a cross build is
    not platform.machine() (the build host).  In order: EXAQ_TARGET_ARCH
    (e.g. aarch64, x86_64), _PYTHON_HOST_PLATFORM (set by cross-build tools,
    e.g. linux-aarch64), the target of the C compiler (`$CC -dumpmachine`),
    the host."""
    forced = os.environ.get("EXAQ_TARGET_ARCH")
    if forced:
        return forced.lower()
    host_platform = os.environ.get("_PYTHON_HOST_PLATFORM")
    if host_platform:
        return host_platform.rsplit("-", 1)[-1].lower()
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC")
    if cc:
        try:
            out = subprocess.run(shlex.split(cc) + ["-dumpmachine"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
            if out:
                return out.split("-", 1)[0].lower()
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return platform.machine().lower()


TARGET = target_machine()
X86 = TARGET in {"x86_64", "amd64", "i686", "i386", "x86"}
ARM64 = TARGET in {"aarch64", "arm64"}

# Per-file code generation flags, by the ISA suffix of the kernel file.
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vbmi", "-mavx2", "-mfma", "-mf16c"],
    "neon": [],
}
COMMON_FLAGS = ["-std=c99", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden",
                "-Wall", "-Wextra", "-Wno-unused-function"]


def kernel_headers():
    return [f"{C_DIR}/{path.name}" for path in sorted((ROOT / C_DIR).glob("*.h"))]


def kernel_sources():
    isas = ["scalar"] + (["avx2", "avx512"] if X86 else []) + (["neon"] if ARM64 else [])
    sources = []
    for path in sorted((ROOT / C_DIR).glob("*.c")):
        suffix = path.stem.rsplit("_", 1)[-1]
        if suffix in ISA_FLAGS and suffix not in isas:
            continue
        sources.append(f"{C_DIR}/{path.name}")
    return sources


class BuildWithPerFileFlags(build_ext):
    """Compiles the C kernels ourselves (per-file ISA flags, in parallel) and links them in.

    An in-place rebuild redoes the extension when any C file or header is newer
    than it (``depends``), and nothing when none is; ``--force`` always does.
    """

    def build_extension(self, ext):
        if self.compiler.compiler_type == "msvc":
            raise RuntimeError("exaq_cpu kernels need GCC or Clang")
        own = [s for s in ext.sources if s.startswith(C_DIR + "/")]
        ext.sources = [s for s in ext.sources if s not in own]
        target = self.get_ext_fullpath(ext.name)
        if not (self.force or newer_group(ext.sources + list(ext.depends), target, "newer")):
            print(f"{ext.name} is up to date ({target})")
            return

        def compile_one(src):
            if src in own:
                suffix = Path(src).stem.rsplit("_", 1)[-1]
                return self.compiler.compile([src], output_dir=self.build_temp, include_dirs=[C_DIR],
                                             extra_postargs=COMMON_FLAGS + ISA_FLAGS.get(suffix, []),
                                             debug=self.debug)
            return self.compiler.compile([src], output_dir=self.build_temp, macros=ext.define_macros,
                                         include_dirs=ext.include_dirs, extra_postargs=ext.extra_compile_args,
                                         debug=self.debug)

        # the Cython module (the longest) first, the kernels beside it
        jobs = int(os.environ.get("EXAQ_BUILD_JOBS", "0")) or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=jobs) as pool:  # each compile is its own process
            objects = [obj for objs in pool.map(compile_one, ext.sources + own) for obj in objs]
        ext.sources = []  # compiled above: super() only links
        ext.extra_objects = objects + list(ext.extra_objects or [])
        self.force = True  # the kernels changed: link even if the Cython module did not
        try:
            super().build_extension(ext)
        finally:
            self.force = False


def extension(name, pyx):
    return Extension(
        name,
        sources=[pyx] + kernel_sources(),
        depends=kernel_sources() + kernel_headers() + ["src/exaq_cpu/_lutgemm.pxi"],
        include_dirs=[C_DIR, numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-ffp-contract=off"],
        libraries=["m"],
        extra_link_args=["-pthread"],  # LUT-GEMM worker threads (c/lutgemm_driver.c)
    )


setup(
    ext_modules=cythonize(
        [extension("exaq_cpu._core", "src/exaq_cpu/_core.pyx")],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False,
                             "initializedcheck": False, "cdivision": True},
    ),
    cmdclass={"build_ext": BuildWithPerFileFlags},
)
