"""Tests of exaq_cpu.clipping (pure Python; a few integration tests need the compiled core)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import exaq_cpu
from exaq_cpu import clipping
from exaq_cpu import clipping as cl
from exaq_cpu.clipping import _model

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings
from hypothesis import strategies as st

# ---------------------------------------------------------------- helpers

def mc_exp_mse(clip, sigma, bits, n, floor, rows, seed):
    """Monte-Carlo E[(exp T - exp Q(T))^2] averaged over all n entries; (mean, standard error)."""
    rng = np.random.default_rng(seed)
    L = 2 ** bits - 1
    per_row = []
    chunk = max(1, 400_000 // n)
    for i in range(0, rows, chunk):
        y = sigma * rng.standard_normal((min(chunk, rows - i), n))
        t = y - y.max(axis=1, keepdims=True)
        q = np.rint((np.clip(t, clip, 0) - clip) * L / -clip)
        v = np.exp(clip + q * (-clip / L))
        if floor == "zero":
            v[q == 0] = 0.0
        per_row.append(np.mean((np.exp(t) - v) ** 2, axis=1))
    e = np.concatenate(per_row)
    return e.mean(), e.std(ddof=1) / math.sqrt(e.size)


# ---------------------------------------------------------------- the model

@pytest.mark.parametrize(
    "clip,sigma,bits,n,floor",
    [(-4.3, 2.0, 2, 1024, "exp"), (-3.0, 5.0, 2, 1024, "zero"), (-1.0, 0.3, 3, 16, "exp"),
     (-9.0, 7.0, 4, 256, "exp"), (-5.0, 1.0, 8, 64, "zero"), (-2.0, 1.0, 2, 2, "exp")],
)
def test_integration_matches_monte_carlo(clip, sigma, bits, n, floor):
    exact = cl.expected_exp_mse(clip, sigma, bits, n=n, floor=floor)
    rows = max(2000, 1_500_000 // n)
    mean, se = mc_exp_mse(clip, sigma, bits, n, floor, rows, seed=1234 + bits)
    assert abs(exact - mean) < 4.5 * se, (exact, mean, se)


def test_density_mass_and_quadrature_convergence():
    n = 1024
    u = np.linspace(_model._u_min(n), 0.0, 200_001)
    mass = np.trapezoid(_model._density_u(u, n), u) if hasattr(np, "trapezoid") else \
        np.trapz(_model._density_u(u, n), u)
    assert mass == pytest.approx((n - 1) / n, abs=1e-8)
    # brute force: dense midpoint rule on each quantization cell (edges aligned, so the
    # integrand is smooth on every piece) with the quantizer applied literally
    for bits, clip, sigma, floor in [(2, -4.0, 2.0, "exp"), (4, -6.0, 3.0, "zero")]:
        L = 2 ** bits - 1
        d = -clip / L
        edges = np.concatenate([[sigma * _model._u_min(n), clip], clip + (np.arange(L) + 0.5) * d, [0.0]])
        brute = 0.0
        for a, b in zip(edges[:-1], edges[1:]):
            t = np.linspace(a, b, 20_001)
            tm = 0.5 * (t[1:] + t[:-1])
            q = np.rint((np.clip(tm, clip, 0) - clip) / d)
            v = np.exp(clip + q * d)
            if floor == "zero":
                v[q == 0] = 0.0
            f = _model._density_u(tm / sigma, n) / sigma
            brute += np.sum((np.exp(tm) - v) ** 2 * f) * (t[1] - t[0])
        assert cl.expected_exp_mse(clip, sigma, bits, floor=floor) == pytest.approx(brute, rel=1e-7)


def test_vectorized_broadcast():
    clips = np.array([-2.0, -3.0, -4.0])
    r = cl.expected_exp_mse(clips[:, None], np.array([1.0, 2.0]), 2)
    assert r.shape == (3, 2)
    assert r[1, 0] == pytest.approx(cl.expected_exp_mse(-3.0, 1.0, 2))
    assert isinstance(cl.expected_exp_mse(-3.0, 1.0, 2), float)


@pytest.mark.parametrize("bits,sigma,floor", [(2, 0.5, "exp"), (2, 2.0, "exp"), (3, 5.0, "exp"),
                                              (4, 3.0, "zero"), (8, 2.0, "exp")])
def test_optimum_is_a_true_minimum(bits, sigma, floor):
    c = cl.optimal_clip(sigma, bits, floor=floor)
    f = lambda x: cl.expected_exp_mse(x, sigma, bits, floor=floor)
    m = f(c)
    for d in (0.01, 0.05, 0.3):
        assert f(c - d) > m and f(c + d) > m
    # to 1e-3: a fine grid around it finds nothing better by more than its resolution
    grid = np.linspace(c - 5e-3, c + 5e-3, 21)
    best = grid[int(np.argmin(f(grid)))]
    assert abs(best - c) <= 1e-3


def test_optimal_clip_array():
    assert cl.optimal_clip(3.0, 4) < 0
    r = cl.optimal_clip(np.array([0.0, 1.0]), 2)
    assert r[0] == 0.0 and r[1] < 0


def test_optimum_monotone_in_sigma():
    sig = np.array([0.1, 0.3, 0.6, 1, 1.5, 2, 3, 4, 5, 7, 10])
    for bits in (2, 3, 4):
        c = cl.optimal_clip(sig, bits)
        assert np.all(np.diff(c) < 0), (bits, c)
    # more bits -> wider range at the same sigma
    assert cl.optimal_clip(2.0, 2) > cl.optimal_clip(2.0, 3) > cl.optimal_clip(2.0, 4)


# ---------------------------------------------------------------- the laws

def test_published_laws_values():
    assert cl.gauss_clip(2.0, 2) == pytest.approx(-1.66 * 2 - 1.85)
    assert cl.gauss_clip(1.0, 3) == pytest.approx(-3.81)
    assert cl.gauss_clip(0.0, 4) == pytest.approx(-2.27)
    assert cl.laplace_clip(1.0, 2) == pytest.approx(-5.78)
    assert cl.laplace_clip(1.0, 4) == pytest.approx(-6.97)
    np.testing.assert_allclose(cl.gauss_clip(np.array([1.0, 2.0]), 2), [-3.51, -5.17])
    assert cl.gauss_clip(1.0, 4, extrapolate=True) == pytest.approx(-4.10, abs=0.02)
    assert cl.gauss_clip(1.0, 6, extrapolate=True) < cl.gauss_clip(1.0, 4)
    with pytest.raises(ValueError, match="bits"):
        cl.gauss_clip(1.0, 5)
    with pytest.raises(ValueError, match="bits"):
        cl.laplace_clip(1.0, 3)


@pytest.mark.parametrize("bits,n", [(3, 1024), (4, 1024), (2, 4096)])
def test_laws_reproduced_in_documented_regime(bits, n):
    # docs/clipping.md: reproduced (|C_law - C*| <= 0.25, exp-MSE within 5%) for sigma ~0.8..1.7
    sig = np.array([1.0, 1.3, 1.6])
    c = cl.optimal_clip(sig, bits, n=n)
    law = cl.gauss_clip(sig, bits)
    assert np.all(np.abs(law - c) <= 0.25)
    ratio = cl.expected_exp_mse(law, sig, bits, n=n) / cl.expected_exp_mse(c, sig, bits, n=n)
    assert np.all(ratio <= 1.05)


def test_laws_not_reproduced_at_large_sigma():
    fit = cl.fit_linear_law(2, [2, 3, 4, 5, 6, 7])
    assert fit.published == (-1.66, -1.85)
    assert -0.4 < fit.slope < -0.1          # the optimum grows slowly, far from -1.66
    assert fit.mse_ratio.max() > 4          # the published clip costs >4x exp-MSE at sigma 7
    assert "fitted C" in fit.summary()


# ---------------------------------------------------------------- tables / modes

def test_table_matches_solver():
    for bits, floor in [(2, "exp"), (4, "zero")]:
        s, c = cl.optimal_clip_table(bits, floor=floor)
        assert s[0] == 0 and s[-1] == pytest.approx(10.0) and c[0] == 0
        for i in (5, 20, 77):
            assert c[i] == pytest.approx(cl.optimal_clip(s[i], bits, floor=floor), abs=2e-3)
    assert cl.table_clip(2.05, 2) == pytest.approx(cl.optimal_clip(2.05, 2), abs=5e-3)
    for obj in cl.TABLE_OBJECTIVES:
        for floor in cl.FLOORS:
            s, c = cl.optimal_clip_table(3, floor=floor, objective=obj)
            assert s.shape == c.shape and np.all(c[1:] < 0)
    assert cl.table_clip(12.0, 2) < cl.table_clip(10.0, 2)   # extrapolates
    s, c = cl.optimal_clip_table(2, n=64)                     # computed for another n
    assert c[10] == pytest.approx(cl.optimal_clip(1.0, 2, n=64), abs=2e-3)


def test_row_objectives_exp_floor_clip_less_than_exp_mse():
    # the whole-row objectives see the exp(lo) floor of every entry: they clip less aggressively
    for obj in ("softmax_mse", "softmax_kl"):
        assert cl.table_clip(5.0, 2, objective=obj) < cl.table_clip(5.0, 2) - 2
    r = cl.expected_softmax_error(np.array([-3.0, -8.0]), 5.0, 2, objective="kl", rows=64)
    assert r.shape == (2,) and np.all(r > 0)


def test_clip_from_stats():
    st = {"sigma": 2.0, "min": -20.0, "mean": -5.0, "mean_abs_dev": 1.6, "count": 100}
    assert cl.clip_from_stats("table", st, 2, "exp") == pytest.approx(cl.table_clip(2.0, 2))
    assert cl.clip_from_stats("gauss", st, 2, "exp") == pytest.approx(-5.17)
    assert cl.clip_from_stats("laplace", st, 2, "exp") == pytest.approx(-4.01 * 1.6 - 1.77)
    assert cl.clip_from_stats("naive", st, 2, "exp") == -20.0
    assert cl.clip_from_stats("accurate", st, 3, "zero") == \
        cl.clip_from_stats(cl.BEST_MODE, st, 3, "zero")
    narrow = dict(st, min=-1.5)
    for mode in cl.CLIP_MODES:
        if mode == "laplace":
            continue
        assert cl.clip_from_stats(mode, narrow, 2, "exp") == -1.5   # max(lo_obs, C)
    assert set(cl.STATS_CLIP_MODES) <= set(cl.CLIP_MODES)
    assert cl.clip_from_stats("table", {"sigma": 0.0, "min": 0.0, "count": 1}, 2, "exp") == 0.0
    with pytest.raises(ValueError, match="mode"):
        cl.clip_from_stats("nope", st, 2, "exp")
    with pytest.raises(ValueError, match="floor"):
        cl.clip_from_stats("table", st, 2, "none")


@settings(max_examples=60, deadline=None, database=None)
@given(sigma=st.floats(0, 30), lo=st.floats(-200, 0), bits=st.integers(2, 8),
       mode=st.sampled_from(["table", "softmax_mse", "softmax_kl", "softmax_l1", "gauss", "accurate"]),
       floor=st.sampled_from(["exp", "zero"]))
def test_clip_from_stats_bounds(sigma, lo, bits, mode, floor):
    r = cl.clip_from_stats(mode, {"sigma": sigma, "min": lo, "mean_abs_dev": sigma}, bits, floor)
    assert lo <= r <= 0.0 and math.isfinite(r)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("call,word", [
    (lambda: cl.expected_exp_mse(-1.0, -1.0, 2), "sigma"),
    (lambda: cl.expected_exp_mse(-1.0, 1.0, 1), "bits"),
    (lambda: cl.expected_exp_mse(-1.0, 1.0, 9), "bits"),
    (lambda: cl.expected_exp_mse(-1.0, 1.0, 2, n=1), "n"),
    (lambda: cl.expected_exp_mse(0.5, 1.0, 2), "clip"),
    (lambda: cl.expected_exp_mse(-1.0, 1.0, 2, floor="x"), "floor"),
    (lambda: cl.optimal_clip(-0.1, 2), "sigma"),
    (lambda: cl.optimal_clip(1.0, 0), "bits"),
    (lambda: cl.optimal_clip(1.0, 2, n=0), "n"),
    (lambda: cl.optimal_clip(float("nan"), 2), "sigma"),
    (lambda: cl.gauss_clip(-1.0, 2), "sigma"),
    (lambda: cl.laplace_clip(-1.0, 2), "b"),
    (lambda: cl.fit_linear_law(2, [1.0]), "sigmas"),
    (lambda: cl.fit_linear_law(2, [1.0, -2.0]), "sigma"),
    (lambda: cl.optimal_clip_table(9), "bits"),
    (lambda: cl.optimal_clip_table(2, objective="x"), "objective"),
    (lambda: cl.Calibrator(n_calib=0), "n_calib"),
    (lambda: cl.Calibrator(bits=9), "bits"),
    (lambda: cl.Calibrator(law="x"), "law"),
])
def test_bad_input(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_bad_input_types():
    """A wrong type is a TypeError (docs/errors.md)."""
    for bits in (2.5, "2", True):
        with pytest.raises(TypeError, match="bits"):
            cl.expected_exp_mse(-1.0, 1.0, bits)


def test_kernel_bits_agree_with_the_core():
    """clipping and the C core accept the same code widths where clips go to the kernels."""
    from exaq_cpu import _core
    from exaq_cpu.llama.model import make_softmax

    assert cl.KERNEL_BITS == _core.KERNEL_BITS == (2, 3, 4)
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    for bits in range(0, 10):
        core_ok = bits in _core.KERNEL_BITS
        for make in (lambda b: cl.Calibrator(bits=b), lambda b: exaq_cpu.softmax(x, b),
                     lambda b: make_softmax("exaq", b)):
            if core_ok:
                make(bits)
            else:
                with pytest.raises(ValueError, match="bits"):
                    make(bits)


# ---------------------------------------------------------------- calibrator

def _scores(rng, sigma, shape=(2, 4, 8, 64)):
    return (sigma * rng.standard_normal(shape)).astype(np.float32)


def test_calibrator_dynamic_then_frozen(tmp_path):
    rng = np.random.default_rng(0)
    cal = cl.Calibrator(n_calib=5, bits=2, law="gauss")
    got, lo_obs, cs = [], [], []
    for _ in range(5):
        x = _scores(rng, 3.0)
        st = cl.numpy_score_stats(x)
        lo_obs.append(st["min"])
        cs.append(cl.gauss_clip(st["sigma"], 2))
        got.append(cal.observe("layer.3", x))
        assert got[-1] == pytest.approx(max(lo_obs[-1], cs[-1]), rel=1e-4)
    assert cal.frozen("layer.3")
    expect = max(np.mean(lo_obs), np.mean(cs))
    assert cal["layer.3"] == pytest.approx(expect, rel=1e-4)
    # frozen: the scores are no longer looked at
    assert cal.observe("layer.3", _scores(rng, 50.0)) == cal["layer.3"]
    assert cal.stats("layer.3")["calls"] == 6 and len(cal.stats("layer.3")["sigma"]) == 5
    # persistence
    cal.observe("layer.4", _scores(rng, 1.0))
    back = cl.Calibrator.from_json(cal.to_json())
    assert back["layer.3"] == cal["layer.3"] and not back.frozen("layer.4")
    p = tmp_path / "cal.json"
    cal.save(p)
    assert json.loads(p.read_text())["law"] == "gauss"
    assert cl.Calibrator.load(p)["layer.3"] == cal["layer.3"]
    with pytest.raises(KeyError, match="unknown layer 'layer.9'"):
        cal["layer.9"]
    with pytest.raises(ValueError, match="not frozen"):
        cal["layer.4"]
    cal.freeze("layer.4")
    assert cal["layer.4"] < 0


def test_calibrator_table_mode_masked_and_degenerate():
    rng = np.random.default_rng(1)
    cal = cl.Calibrator(n_calib=2, bits=3, law="softmax_kl", floor="zero")
    x = _scores(rng, 4.0)
    x[..., 40:] = -np.inf
    c = cal.observe("a", x)
    st = cl.numpy_score_stats(x)
    assert st["count"] == 2 * 4 * 8 * 40
    assert c == pytest.approx(cl.clip_from_stats("softmax_kl", st, 3, "zero"), rel=1e-4)
    assert cal.observe("a", np.full((3, 5), -np.inf)) == cl.FALLBACK_CLIP  # all masked: not counted
    assert not cal.frozen("a")
    assert cal.observe("b", np.zeros((2, 1))) == cl.FALLBACK_CLIP         # no spread
    assert cal.stats("b")["calls"] == 1


def test_calibrator_per_head():
    rng = np.random.default_rng(2)
    cal = cl.Calibrator(n_calib=3, bits=2, law="table", per_head=True, head_axis=1)
    sig = np.array([0.5, 2.0, 6.0])
    for _ in range(3):
        x = sig[None, :, None, None] * rng.standard_normal((2, 3, 4, 128))
        clips = cal.observe("l0", x)
        assert clips.shape == (3,)
        for h in range(3):
            st = cl.numpy_score_stats(x[:, h])
            assert clips[h] == pytest.approx(cl.clip_from_stats("table", st, 2, "exp"))
    frozen = cal["l0"]
    assert frozen.shape == (3,) and frozen[0] > frozen[1] > frozen[2]
    back = cl.Calibrator.from_json(cal.to_json())
    np.testing.assert_allclose(back["l0"], frozen)
    with pytest.raises(ValueError, match="head_axis"):
        cl.Calibrator(per_head=True, head_axis=-1).observe("x", np.zeros((2, 3)))


# ---------------------------------------------------------------- robustness + CLI

def test_robustness_study_small():
    res = cl.robustness_study(2, (2.0,), n=256, rows=32, seed=0)
    assert [r["dist"] for r in res] == list(cl.DISTRIBUTIONS)
    for r in res:
        assert r["ratio_analytic"] >= 1.0 - 1e-9 and r["ratio_gauss"] >= 1.0 - 1e-9
    assert res[0]["ratio_analytic"] < 1.1        # Gaussian rows: the model's own case


def test_cli_sweep_and_fit(capsys):
    from exaq_cpu.clipping.__main__ import main
    assert main(["sweep", "--bits", "2", "--sigma", "2", "--points", "7", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "<- C*" in out and "-4.32" in out
    assert main(["fit", "--bits", "3", "--sigma-min", "1", "--sigma-max", "2", "--num", "3"]) == 0
    assert "published" in capsys.readouterr().out
    assert main(["sweep", "--bits", "9", "--sigma", "2", "--no-plot"]) == 2


def test_cli_sweep_png(tmp_path):
    pytest.importorskip("matplotlib")
    from exaq_cpu.clipping.__main__ import main
    png = tmp_path / "s.png"
    assert main(["sweep", "--bits", "2", "--sigma", "2", "--points", "5", "--png", str(png)]) == 0
    assert png.stat().st_size > 0


# ---------------------------------------------------------------- with the compiled core

def test_score_stats_matches_numpy_reference():
    pytest.importorskip("exaq_cpu._core")
    import exaq_cpu
    rng = np.random.default_rng(3)
    x = _scores(rng, 3.0)
    x[0, 0, :, 50:] = -np.inf
    a, b = exaq_cpu.score_stats(x), cl.numpy_score_stats(x)
    for k in ("sigma", "min", "mean", "mean_abs_dev"):
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5)
    assert a["count"] == b["count"]


def test_softmax_with_calibrated_and_table_clip():
    pytest.importorskip("exaq_cpu._core")
    import exaq_cpu
    rng = np.random.default_rng(4)
    cal = cl.Calibrator(n_calib=2, bits=2)
    for _ in range(2):
        cal.observe("layer.3", _scores(rng, 2.0))
    x = _scores(rng, 2.0)
    p = exaq_cpu.softmax(x, bits=2, clip=cal["layer.3"])
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    for mode in cl.STATS_CLIP_MODES:
        p = exaq_cpu.softmax(x, bits=2, clip=mode)
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)


# --- rows with no spread (one key, constant rows) under every clip mode -------------------


def _no_spread_rows():
    return [
        np.zeros((4, 1), np.float32),                     # one key: the first decode step
        np.full((3, 7), 2.5, np.float32),                 # constant rows
        np.array([[1.0, -np.inf, -np.inf, -np.inf]], np.float32),  # one unmasked key
        np.full((2, 3, 1), -4.0, np.float32),
    ]


@pytest.mark.parametrize("mode", ["gauss", "row", None, "table", *clipping.STATS_CLIP_MODES])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_every_clip_mode_handles_rows_with_no_spread(mode, bits):
    for x in _no_spread_rows():
        p = exaq_cpu.softmax(x, bits=bits, clip=mode)
        expected = np.isfinite(x) / np.isfinite(x).sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(p, expected, rtol=1e-6)
        # the same bits as the default mode, which always handled them
        assert np.array_equal(p, exaq_cpu.softmax(x, bits=bits, clip="gauss"))
        packed = exaq_cpu.softmax(x, bits=bits, clip=mode, output="packed")
        assert np.array_equal(packed.to_float(), p)


# --- Calibrator JSON from an untrusted source ---------------------------------------------


def _calibrator_state():
    cal = cl.Calibrator(n_calib=2, bits=2)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    for _ in range(2):
        cal.observe("layer.0", x)
    return json.loads(cal.to_json())


@pytest.mark.parametrize("mutate, word", [
    (lambda d: d.pop("bits"), "bits"),
    (lambda d: d["layers"]["layer.0"].pop("sigma"), "sigma"),
    (lambda d: d["layers"]["layer.0"].__setitem__("frozen_clip", 2.5), "frozen_clip"),
    (lambda d: d["layers"]["layer.0"].__setitem__("frozen_clip", "nan"), "frozen_clip"),
    (lambda d: d["layers"]["layer.0"].__setitem__("calls", "2"), "calls"),
    (lambda d: d["layers"]["layer.0"].__setitem__("min", ["a"]), "min"),
    (lambda d: d.__setitem__("layers", []), "layers"),
    (lambda d: d["layers"].__setitem__("layer.0", 3), "layer"),
])
def test_calibrator_json_rejects_bad_fields(mutate, word):
    state = _calibrator_state()
    cl.Calibrator.from_json(json.dumps(state))  # the untouched state loads
    mutate(state)
    with pytest.raises(ValueError, match=word):
        cl.Calibrator.from_json(json.dumps(state))


def test_calibrator_json_deep_nesting_and_junk():
    for text in ["[" * 100000 + "]" * 100000, "not json", "[1, 2]", '{"version": 1}']:
        with pytest.raises(ValueError):
            cl.Calibrator.from_json(text)


def test_per_head_clip_array_is_a_softmax_clip():
    """Calibrator(per_head=True) gives one clip per head: softmax takes the array as
    clip= and applies each to its head's rows, as the per-head calls would."""
    rng = np.random.default_rng(11)
    cal = cl.Calibrator(n_calib=2, bits=2, per_head=True)
    x = (rng.standard_normal((2, 9, 5, 64)) * np.linspace(1, 4, 9)[None, :, None, None]).astype(np.float32)
    for _ in range(3):
        clip = cal.observe("layer", x)
    assert clip.shape == (9,) and len(set(clip.tolist())) > 1
    p = exaq_cpu.softmax(x, 2, clip=clip)
    expected = np.stack([exaq_cpu.softmax(x[:, h], 2, clip=float(clip[h])) for h in range(9)], axis=1)
    assert np.array_equal(p, expected)
    rows = exaq_cpu.softmax(x, 3, clip=clip[None, :, None])  # any array that broadcasts to the rows' shape
    assert np.array_equal(rows, np.stack([exaq_cpu.softmax(x[:, h], 3, clip=float(clip[h]))
                                          for h in range(9)], axis=1))
    with pytest.raises(ValueError, match="broadcast"):
        exaq_cpu.softmax(x, 2, clip=clip[:4])
    with pytest.raises(ValueError, match="negative"):
        exaq_cpu.softmax(x, 2, clip=-clip)
    with pytest.raises(ValueError, match="output='float'"):
        exaq_cpu.softmax(x, 2, clip=clip, output="packed")
