"""Command line: ``python -m exaq_cpu.clipping {sweep,fit,table,robustness,llama-compare,regen-tables}``.

Examples::

    python -m exaq_cpu.clipping sweep --bits 2 --sigma 2            # MSE vs clip, PNG if matplotlib
    python -m exaq_cpu.clipping fit --bits 2 --sigma-min 2 --sigma-max 7
    python -m exaq_cpu.clipping table --bits 3 --objective softmax_kl --floor zero
    python -m exaq_cpu.clipping robustness --bits 2 --sigma 2 5
    python -m exaq_cpu.clipping llama-compare --bits 2 --floor exp zero --tokens 1024
    python -m exaq_cpu.clipping regen-tables                        # rewrite _tables.py (~10 min)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

import numpy as np


def _cmd_sweep(a) -> int:
    from . import expected_exp_mse, gauss_clip, optimal_clip, table_clip

    c_opt = optimal_clip(a.sigma, a.bits, n=a.n, floor=a.floor)
    lo = c_opt * a.span
    hi = min(c_opt / a.span, -1e-3)
    if a.points < 2:
        raise ValueError(f"points must be >= 2, got {a.points}")
    clips = np.unique(np.append(np.linspace(lo, hi, a.points), c_opt))
    mse = expected_exp_mse(clips, a.sigma, a.bits, n=a.n, floor=a.floor)
    m_opt = expected_exp_mse(c_opt, a.sigma, a.bits, n=a.n, floor=a.floor)
    print(f"# exp-MSE vs clip: bits={a.bits} sigma={a.sigma:g} n={a.n} floor={a.floor}")
    print(f"# analytic optimum C* = {c_opt:.4f}, exp-MSE(C*) = {m_opt:.6e}")
    marks = {}
    if a.bits in (2, 3, 4):
        g = gauss_clip(a.sigma, a.bits)
        marks["gauss law"] = g
        print(f"# published gauss law C = {g:.4f}, exp-MSE = "
              f"{expected_exp_mse(g, a.sigma, a.bits, n=a.n, floor=a.floor):.6e}")
    if a.n == 1024 and a.sigma <= 10:
        for obj in ("softmax_mse", "softmax_kl"):
            marks[obj] = table_clip(a.sigma, a.bits, floor=a.floor, objective=obj)
            print(f"# {obj} table C = {marks[obj]:.4f}")
    print(f"{'clip':>10} {'exp_mse':>14} {'ratio':>8}")
    for c, m in zip(clips, mse):
        flag = "  <- C* (minimum)" if c == c_opt else ""
        print(f"{c:10.4f} {m:14.6e} {m / m_opt:8.4f}{flag}")
    if a.no_plot:
        return 0
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# note: matplotlib is not installed, no PNG written "
              "(pip install matplotlib, or the package's plot extra)", file=sys.stderr)
        return 0
    path = a.png or f"clip_sweep_b{a.bits}_s{a.sigma:g}_{a.floor}.png"
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(clips, mse, label="exp-MSE (numerical integration)")
    ax.axvline(c_opt, color="k", ls="--", label=f"optimum C*={c_opt:.3f}")
    for (name, c), col in zip(marks.items(), ("C1", "C2", "C3")):
        if lo <= c <= hi:
            ax.axvline(c, color=col, ls=":", label=f"{name} {c:.3f}")
    ax.set_xlabel("clip C")
    ax.set_ylabel("E[(exp T - exp Q(T))^2]")
    ax.set_title(f"EXAQ {a.bits}-bit, sigma={a.sigma:g}, n={a.n}, floor={a.floor}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"# wrote {path}")
    return 0


def _cmd_fit(a) -> int:
    from . import fit_linear_law

    sig = np.linspace(a.sigma_min, a.sigma_max, a.num)
    fit = fit_linear_law(a.bits, sig, n=a.n, floor=a.floor)
    print(fit.summary())
    if a.verbose:
        print(f"{'sigma':>8} {'C*':>9}" + (f" {'law':>9} {'mse_ratio':>9}" if fit.published else ""))
        for i, s in enumerate(fit.sigmas):
            line = f"{s:8.3f} {fit.clips[i]:9.4f}"
            if fit.published:
                pa, pc = fit.published
                line += f" {pa * s + pc:9.4f} {fit.mse_ratio[i]:9.4f}"
            print(line)
    return 0


def _cmd_table(a) -> int:
    from . import optimal_clip_table

    s, c = optimal_clip_table(a.bits, floor=a.floor, objective=a.objective, n=a.n)
    print(f"# {a.objective} table, bits={a.bits}, floor={a.floor}, n={a.n}")
    for si, ci in zip(s, c):
        print(f"{si:6.2f} {ci:9.4f}")
    return 0


def _cmd_robust(a) -> int:
    from . import robustness_study

    res = robustness_study(a.bits, a.sigma, n=a.n, rows=a.rows, seed=a.seed, floor=a.floor)
    g = "ratio_gauss" in res[0]
    print("| distribution | sigma | measured sigma | analytic C | best C | exp-MSE ratio analytic/best"
          + (" | gauss-law C | ratio gauss/best |" if g else " |"))
    print("|---|---|---|---|---|---|" + ("---|---|" if g else ""))
    for r in res:
        line = (f"| {r['dist']} | {r['sigma']:g} | {r['measured_sigma']:.3f} | {r['clip_analytic']:.3f} | "
                f"{r['clip_best']:.3f} | {r['ratio_analytic']:.3f} |")
        if g:
            line += f" {r['clip_gauss']:.3f} | {r['ratio_gauss']:.3f} |"
        print(line)
    return 0


def _cmd_regen(a) -> int:
    from ._gen import generate

    print(f"wrote {generate(a.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m exaq_cpu.clipping",
                                description="EXAQ analytical clipping tools")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, sigma=True):
        sp.add_argument("--bits", type=int, default=2, help="code width 2..8 (default 2)")
        sp.add_argument("--n", type=int, default=1024, help="row length (default 1024)")
        sp.add_argument("--floor", choices=("exp", "zero"), default="exp")

    sp = sub.add_parser("sweep", help="exp-MSE vs clip around the analytic optimum")
    common(sp)
    sp.add_argument("--sigma", type=float, required=True)
    sp.add_argument("--points", type=int, default=25)
    sp.add_argument("--span", type=float, default=2.0,
                    help="sweep C from span*C* to C*/span (default 2)")
    sp.add_argument("--png", default=None, help="PNG path (default clip_sweep_b<bits>_s<sigma>_<floor>.png)")
    sp.add_argument("--no-plot", action="store_true", help="do not write a PNG")
    sp.set_defaults(func=_cmd_sweep)

    sp = sub.add_parser("fit", help="fit C = a*sigma + c to the solver; compare with the paper")
    common(sp)
    sp.add_argument("--sigma-min", type=float, default=0.5)
    sp.add_argument("--sigma-max", type=float, default=10.0)
    sp.add_argument("--num", type=int, default=20)
    sp.add_argument("-v", "--verbose", action="store_true")
    sp.set_defaults(func=_cmd_fit)

    sp = sub.add_parser("table", help="print a sigma -> clip table")
    common(sp)
    sp.add_argument("--objective", default="exp_mse",
                    choices=("exp_mse", "softmax_mse", "softmax_kl", "softmax_l1"))
    sp.set_defaults(func=_cmd_table)

    sp = sub.add_parser("robustness", help="analytic vs best clip on non-Gaussian rows")
    common(sp)
    sp.add_argument("--sigma", type=float, nargs="+", default=[2.0, 5.0])
    sp.add_argument("--rows", type=int, default=256)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=_cmd_robust)

    sp = sub.add_parser("llama-compare", help="perplexity/KL of clip modes on the llama evaluation")
    sp.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    sp.add_argument("--floor", nargs="+", choices=("exp", "zero"), default=["exp", "zero"])
    sp.add_argument("--modes", nargs="+",
                    default=["gauss", "table", "softmax_mse", "softmax_kl", "softmax_l1"],
                    help="clip modes (naive, gauss, laplace, row, table, softmax_mse, softmax_kl, ...)")
    sp.add_argument("--tokens", type=int, default=1024)
    sp.add_argument("--ctx", type=int, default=256)
    sp.add_argument("--model", default=None, help="GGUF path (default: the llama subpackage's default)")
    sp.add_argument("--json", default=None, help="also write the rows as JSON here")
    sp.set_defaults(func=lambda a: __import__("exaq_cpu.clipping._llama_compare",
                                              fromlist=["main_compare"]).main_compare(a))

    sp = sub.add_parser("regen-tables", help="recompute the shipped tables (_tables.py)")
    sp.add_argument("--out", default=None, help="output path (default: the package's _tables.py)")
    sp.set_defaults(func=_cmd_regen)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
