"""Static per-layer (optionally per-head) clip calibration (docs/semantics.md, section 3.4)."""

from __future__ import annotations

import json
import math
from typing import Dict, List, Optional

import numpy as np

from .. import _core
from .._args import check_axis, check_scores, to_rows
from ._model import KERNEL_BITS, _check_bits, _check_floor
from ._tablemodes import CLIP_MODES, clip_law

__all__ = ["FALLBACK_CLIP", "Calibrator", "numpy_score_stats"]

_JSON_VERSION = 1

#: Clip returned for a pool with no spread (all shifted scores 0) or no unmasked score.
FALLBACK_CLIP = -1.0


def _usable(v):
    """Negative clip(s): non-negative values (no spread) become FALLBACK_CLIP."""
    if np.ndim(v) == 0:
        v = float(v)
        return v if v < 0 else FALLBACK_CLIP
    v = np.asarray(v, dtype=np.float64)
    return np.where(v < 0, v, FALLBACK_CLIP)


def numpy_score_stats(x, *, axis: int = -1) -> dict:
    """NumPy reference of :func:`exaq_cpu.score_stats` (docs/semantics.md, section 3.1).

    Shift every row (along ``axis``) by its maximum over unmasked entries
    (``-inf`` is masked), then pool all unmasked shifted scores of the call:
    ``sigma`` (Bessel, n-1; 0 for fewer than 2 scores), ``min`` (lo_obs),
    ``mean``, ``mean_abs_dev`` and ``count``.  Rows holding NaN or ``+inf``
    are left out.  With no unmasked score the float fields are NaN.  Computed
    in float64 with NumPy, so it agrees with the compiled figures to rounding.

    Parameters
    ----------
    x : array_like
        Scores of at least one dimension (converted to float64).
    axis : int, keyword-only, default -1
        The softmax axis.

    Returns
    -------
    dict
        ``sigma``, ``min``, ``mean``, ``mean_abs_dev`` (floats) and ``count``
        (int): the keys of :func:`exaq_cpu.score_stats` but ``invalid_rows``.

    Raises
    ------
    ValueError
        For a 0-d ``x``, scores that do not convert to float, or ``axis`` out
        of range (``numpy.exceptions.AxisError``, a ``ValueError``).

    See Also
    --------
    exaq_cpu.score_stats : the compiled version.

    Examples
    --------
    >>> import numpy as np
    >>> from exaq_cpu import clipping
    >>> st = clipping.numpy_score_stats(np.array([[2.0, 1.0, 0.0, -3.0], [1.0, 1.0, -np.inf, 0.0]]))
    >>> st["min"], st["count"], round(st["sigma"], 4)     # the -inf entry takes no part
    (-5.0, 7, 1.7995)
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError("scores must have at least one dimension")
    a = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
    bad = np.isnan(a).any(axis=1) | np.isposinf(a).any(axis=1)
    a = a[~bad]
    with np.errstate(invalid="ignore"):
        mx = a.max(axis=1, keepdims=True) if a.size else np.zeros((0, 1))
        t = a - mx
    t = t[np.isfinite(t)]
    cnt = int(t.size)
    if cnt == 0:
        nan = float("nan")
        return {"sigma": nan, "min": nan, "mean": nan, "mean_abs_dev": nan, "count": 0}
    mean = float(t.mean())
    return {
        "sigma": float(t.std(ddof=1)) if cnt > 1 else 0.0,
        "min": float(t.min()),
        "mean": mean,
        "mean_abs_dev": float(np.mean(np.abs(t - mean))),
        "count": cnt,
    }


def _stats_fn():
    """The compiled score statistics (the same figures as :func:`exaq_cpu.score_stats`)."""
    return _compiled_score_stats


def _compiled_score_stats(x, *, axis: int = -1) -> dict:
    arr = check_scores(x)
    return _core.score_stats(to_rows(arr, check_axis(axis, arr.ndim)))


class _Layer:
    __slots__ = ("calls", "clip", "frozen_clip", "frozen_min", "min", "sigma")

    def __init__(self):
        self.calls = 0
        self.sigma: List = []
        self.min: List = []
        self.clip: List = []       # raw law clip C (before the max with lo_obs)
        self.frozen_clip = None    # mean C
        self.frozen_min = None     # mean lo_obs


class Calibrator:
    """Collects score statistics per layer and freezes static clips (docs/semantics.md, section 3.4).

    For each ``name`` (a layer, e.g. ``"layer.3"``), the first ``n_calib``
    calls of :meth:`observe` compute the statistics of that call's scores
    (``sigma``, ``lo_obs = min``) and the law's clip ``C`` dynamically, and
    return ``max(lo_obs, C)`` for that call.  After the ``n_calib``-th call the
    layer is *frozen*: the mean of ``C`` and the mean of ``lo_obs`` over those
    calls are kept and every later call returns the static clip
    ``max(mean lo_obs, mean C)`` without looking at the scores again.

    ``cal[name]`` gives the frozen clip (``KeyError`` for a name never
    observed, ``ValueError`` while it is still calibrating); ``name in cal``
    and ``len(cal)`` count the observed names.  The whole state (settings,
    per-call history, frozen clips) round-trips through JSON
    (:meth:`to_json`/:meth:`from_json`, :meth:`save`/:meth:`load`).

    Parameters
    ----------
    n_calib : int, default 25
        Calls per layer before freezing (the reference uses 25), ``>= 1``.
    bits : {2, 3, 4}, default 2
        Code width passed to the law (the widths the softmax kernels take).
    law : str, default "gauss"
        Any mode of :data:`CLIP_MODES` (``"gauss"``, ``"laplace"``, ``"table"``,
        ``"softmax_kl"``, ...; ``"naive"`` freezes the mean ``lo_obs``).
    per_head : bool, default False
        Keep separate statistics per head.  Heads are indexed along
        ``head_axis`` of the scores (default 1, i.e. scores shaped
        ``(batch, heads, q, k)``); :meth:`observe` and ``cal[name]`` then give a
        ``numpy.ndarray`` of shape ``(heads,)``, one clip per head slice
        ``scores.take(h, axis=head_axis)`` -- apply each to its own slice
        (:func:`exaq_cpu.softmax` takes the array as ``clip=`` and does so).
    head_axis : int, keyword-only, default 1
        The head axis for ``per_head=True`` (ignored otherwise).
    floor : {"exp", "zero"}, keyword-only, default "exp"
        Floor the table modes are computed for.

    Raises
    ------
    TypeError
        If ``n_calib`` or ``bits`` is not an int.
    ValueError
        If ``n_calib < 1``, ``bits`` is not 2, 3 or 4, ``law`` is not in
        :data:`CLIP_MODES` (or is ``"laplace"`` with 3 bits), ``head_axis`` is
        not an integer, or ``floor`` is unknown.

    See Also
    --------
    exaq_cpu.softmax : takes the clips as ``clip=``.
    clip_law : the raw clip of each mode.

    Examples
    --------
    >>> import numpy as np, exaq_cpu
    >>> from exaq_cpu.clipping import Calibrator
    >>> call_1 = (np.arange(256, dtype=np.float32) % 17).reshape(4, 64) * 0.5   # sigma 2.46, min -8
    >>> call_2 = (np.arange(256, dtype=np.float32) % 13).reshape(4, 64) * 0.5   # sigma 1.87, min -6
    >>> cal = Calibrator(n_calib=2, bits=2)
    >>> clip = cal.observe("layer.3", call_1)           # calibrating: this call's own clip
    >>> round(clip, 4), cal.frozen("layer.3")           # -1.66 * 2.4622 - 1.85
    (-5.9373, False)
    >>> p = exaq_cpu.softmax(call_1, bits=2, clip=clip)
    >>> round(cal.observe("layer.3", call_2), 4), cal.frozen("layer.3")
    (-4.9481, True)
    >>> round(cal["layer.3"], 4)                        # the mean of the two clips, from now on
    -5.4427
    >>> round(cal.observe("layer.3", 100 * call_1), 4)  # frozen: the scores are not looked at
    -5.4427

    One clip per head of ``(batch, heads, q, k)`` scores:

    >>> scores = np.stack([call_1, call_2])[None]       # 2 heads
    >>> per_head = Calibrator(n_calib=1, bits=2, per_head=True)
    >>> per_head.observe("layer.3", scores).round(4)
    array([-5.9373, -4.9481])
    >>> exaq_cpu.softmax(scores, bits=2, clip=per_head["layer.3"]).shape
    (1, 2, 4, 64)
    """

    def __init__(self, n_calib: int = 25, bits: int = 2, law: str = "gauss", per_head: bool = False,
                 *, head_axis: int = 1, floor: str = "exp"):
        if isinstance(n_calib, bool) or not isinstance(n_calib, (int, np.integer)):  # docs/errors.md
            raise TypeError(f"n_calib must be an int, got {type(n_calib).__name__}")
        if n_calib < 1:
            raise ValueError(f"n_calib must be an integer >= 1, got {n_calib!r}")
        if law not in CLIP_MODES:
            raise ValueError(f"law must be one of {CLIP_MODES}, got {law!r}")
        if isinstance(head_axis, bool) or not isinstance(head_axis, (int, np.integer)):
            raise ValueError(f"head_axis must be an integer, got {head_axis!r}")
        self.n_calib = int(n_calib)
        self.bits = _check_bits(bits)
        if self.bits not in KERNEL_BITS:
            # its clips are for exaq_cpu.softmax, which takes only the core's widths
            raise ValueError(f"bits must be one of {KERNEL_BITS} (the widths the kernels take), got {bits}")
        self.law = law
        self.per_head = bool(per_head)
        self.head_axis = int(head_axis)
        self.floor = _check_floor(floor)
        if law == "laplace" and self.bits not in (2, 4):
            raise ValueError(f"law='laplace' is published for bits 2 and 4 only, got bits={bits}")
        self._layers: Dict[str, _Layer] = {}

    # ------------------------------------------------------------------ core
    def _one(self, stats: dict):
        """(lo_obs, raw C, sigma) for one pool of statistics, None if empty."""
        if not stats.get("count", 0):
            return None
        lo_obs = float(stats["min"])
        c = float(clip_law(self.law, stats, self.bits, self.floor))
        if not math.isfinite(c):           # "naive": no clip, freeze lo_obs only
            c = lo_obs
        return lo_obs, c, float(stats["sigma"])

    def observe(self, name: str, scores, axis: int = -1):
        """Record one call's scores for layer ``name``; return the clip to use now.

        While the layer is calibrating the returned clip is dynamic,
        ``max(lo_obs, C)`` of these scores; once frozen it is the static
        clip.  Always a negative float (an array of shape ``(heads,)`` with
        ``per_head``), valid as the static ``clip=`` of :func:`exaq_cpu.softmax`.
        When there is nothing to clip -- a call whose scores are all masked
        (not counted) or a pool with no spread (every shifted score is 0, e.g.
        a single key; counted) -- :data:`FALLBACK_CLIP` is returned: such scores
        are quantized exactly whatever the clip.

        Parameters
        ----------
        name : str
            The layer (any string).
        scores : array_like
            This call's scores, at least one dimension (and the head axis with
            ``per_head``).
        axis : int, default -1
            The softmax axis of ``scores``.

        Returns
        -------
        float or numpy.ndarray
            The clip to pass as ``clip=`` now: a negative float, or a float64
            array of shape ``(heads,)`` with ``per_head``.

        Raises
        ------
        TypeError
            If ``name`` is not a str, or the scores are not numeric.
        ValueError
            If the scores are 0-d or ``axis`` is out of range, the head axis is
            the softmax axis, or the number of heads changed from earlier calls.

        Examples
        --------
        See the class examples.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        layer = self._layers.setdefault(name, _Layer())
        if layer.frozen_clip is not None:
            layer.calls += 1
            return self[name]
        stats_fn = _stats_fn()
        if self.per_head:
            arr = np.asarray(scores)
            ha = self.head_axis % arr.ndim
            ax = axis % arr.ndim
            if ha == ax:
                raise ValueError("head_axis must differ from the softmax axis")
            res = []
            for h in range(arr.shape[ha]):
                st = stats_fn(np.take(arr, h, axis=ha), axis=ax - (ax > ha))
                res.append(self._one(st))
            if any(r is None for r in res):
                return np.full(len(res), FALLBACK_CLIP)
            lo = np.array([r[0] for r in res])
            c = np.array([r[1] for r in res])
            if layer.min and len(layer.min[0]) != lo.size:
                raise ValueError(f"layer {name!r}: got {lo.size} heads, calibrated with {len(layer.min[0])}")
            layer.sigma.append([r[2] for r in res])
            layer.min.append(lo.tolist())
            layer.clip.append(c.tolist())
            out = np.maximum(lo, c)
        else:
            st = stats_fn(scores, axis=axis)
            r = self._one(st)
            if r is None:
                return FALLBACK_CLIP
            lo, c, sg = r
            layer.sigma.append(sg)
            layer.min.append(lo)
            layer.clip.append(c)
            out = max(lo, c)
        layer.calls += 1
        if layer.calls >= self.n_calib:
            self._freeze(layer)
        return _usable(out)

    def _freeze(self, layer: _Layer):
        if not layer.clip:
            raise ValueError("cannot freeze a layer with no observed call")
        layer.frozen_clip = np.mean(np.asarray(layer.clip, dtype=np.float64), axis=0)
        layer.frozen_min = np.mean(np.asarray(layer.min, dtype=np.float64), axis=0)

    def freeze(self, name: Optional[str] = None):
        """Freeze ``name`` (or every calibrating layer) now, from the calls seen so far.

        Parameters
        ----------
        name : str, optional
            The layer; by default every layer still calibrating.  Freezing a
            frozen layer again recomputes the same clip.

        Raises
        ------
        KeyError
            If ``name`` was never observed.
        ValueError
            If ``name`` saw no counted call (only fully masked scores).

        Examples
        --------
        >>> import numpy as np
        >>> from exaq_cpu.clipping import Calibrator
        >>> cal = Calibrator(n_calib=25, bits=2)
        >>> round(cal.observe("a", np.array([[2.0, 1.0, 0.0, -3.0]])), 4)
        -5.0
        >>> cal.freeze()                                   # after 1 call instead of 25
        >>> cal.frozen("a"), round(cal["a"], 4)
        (True, -5.0)
        """
        names = [name] if name is not None else [k for k, v in self._layers.items() if v.frozen_clip is None]
        for k in names:
            self._freeze(self._get(k))

    # ------------------------------------------------------------ accessors
    def _get(self, name: str) -> _Layer:
        try:
            return self._layers[name]
        except KeyError:
            known = ", ".join(repr(k) for k in sorted(self._layers)) or "none"
            raise KeyError(f"unknown layer {name!r} (known layers: {known})") from None

    def __getitem__(self, name: str):
        """The frozen static clip of ``name`` (float, or array with ``per_head``).

        ``max(mean lo_obs, mean C)`` over the calibration calls: negative, or
        :data:`FALLBACK_CLIP` where that is not negative.

        Parameters
        ----------
        name : str
            An observed layer.

        Returns
        -------
        float or numpy.ndarray
            The static clip; a float64 array of shape ``(heads,)`` with
            ``per_head``.

        Raises
        ------
        KeyError
            If ``name`` was never observed.
        ValueError
            If it is still calibrating.
        """
        layer = self._get(name)
        if layer.frozen_clip is None:
            raise ValueError(f"layer {name!r} is not frozen yet: {layer.calls} of "
                             f"{self.n_calib} calibration calls seen")
        return _usable(np.maximum(layer.frozen_min, layer.frozen_clip))

    def frozen(self, name: str) -> bool:
        """True once ``name`` has its static clip.

        Parameters
        ----------
        name : str
            An observed layer.

        Returns
        -------
        bool

        Raises
        ------
        KeyError
            If ``name`` was never observed.
        """
        return self._get(name).frozen_clip is not None

    def __contains__(self, name) -> bool:
        return name in self._layers

    def __len__(self) -> int:
        return len(self._layers)

    def names(self) -> list:
        """Names of every observed layer, in first-seen order.

        Returns
        -------
        list of str

        Examples
        --------
        >>> import numpy as np
        >>> from exaq_cpu.clipping import Calibrator
        >>> cal = Calibrator(n_calib=2)
        >>> for name in ("layer.1", "layer.0", "layer.1"):
        ...     _ = cal.observe(name, np.array([[1.0, 0.0, -2.0]]))
        >>> cal.names(), len(cal), "layer.0" in cal
        (['layer.1', 'layer.0'], 2, True)
        """
        return list(self._layers)

    def stats(self, name: str) -> dict:
        """Per-call history of ``name``: lists ``sigma``, ``min`` and ``clip`` (raw C).

        Parameters
        ----------
        name : str
            An observed layer.

        Returns
        -------
        dict
            ``calls`` (int: the calls observed, before and after freezing;
            fully masked calls during calibration are not counted) and the
            lists ``sigma``, ``min`` and ``clip`` with one entry per
            calibration call (a list per head with ``per_head``).

        Raises
        ------
        KeyError
            If ``name`` was never observed.

        Examples
        --------
        >>> import numpy as np
        >>> from exaq_cpu.clipping import Calibrator
        >>> cal = Calibrator(n_calib=1)
        >>> _ = cal.observe("a", np.array([[2.0, 1.0, 0.0, -3.0]]))
        >>> _ = cal.observe("a", np.array([[2.0, 1.0, 0.0, -3.0]]))
        >>> history = cal.stats("a")
        >>> history["calls"], history["min"], round(history["clip"][0], 4)
        (2, [-5.0], -5.436)
        """
        layer = self._get(name)
        return {"calls": layer.calls, "sigma": list(layer.sigma), "min": list(layer.min),
                "clip": list(layer.clip)}

    # --------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """The full state as plain Python data (what :meth:`to_json` writes).

        Returns
        -------
        dict
            ``version``, the settings (``n_calib``, ``bits``, ``law``,
            ``per_head``, ``head_axis``, ``floor``) and ``layers``: per name,
            ``calls``, the lists ``sigma``, ``min``, ``clip``, and
            ``frozen_clip``/``frozen_min`` (None while calibrating).

        See Also
        --------
        from_dict : the inverse.
        """
        layers = {}
        for k, v in self._layers.items():
            layers[k] = {
                "calls": v.calls, "sigma": v.sigma, "min": v.min, "clip": v.clip,
                "frozen_clip": None if v.frozen_clip is None else np.asarray(v.frozen_clip).tolist(),
                "frozen_min": None if v.frozen_min is None else np.asarray(v.frozen_min).tolist(),
            }
        return {"version": _JSON_VERSION, "n_calib": self.n_calib, "bits": self.bits, "law": self.law,
                "per_head": self.per_head, "head_axis": self.head_axis, "floor": self.floor,
                "layers": layers}

    def to_json(self, **kwargs) -> str:
        """The full state (settings, per-call history, frozen clips) as JSON text.

        Parameters
        ----------
        **kwargs
            Passed to ``json.dumps`` (e.g. ``indent=1``).

        Returns
        -------
        str

        See Also
        --------
        from_json : the inverse.
        save : writes it to a file.

        Examples
        --------
        >>> import numpy as np
        >>> from exaq_cpu.clipping import Calibrator
        >>> cal = Calibrator(n_calib=1, bits=3, law="table")
        >>> _ = cal.observe("a", np.array([[2.0, 1.0, 0.0, -3.0]]))
        >>> back = Calibrator.from_json(cal.to_json())
        >>> back
        Calibrator(n_calib=1, bits=3, law='table', per_head=False, layers=1, frozen=1)
        >>> back["a"] == cal["a"]
        True
        """
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        """Inverse of :meth:`to_dict`; ``ValueError`` naming the field for anything malformed
        (missing keys, wrong types, a frozen clip that is not a finite negative number).

        Parameters
        ----------
        d : dict
            A state as :meth:`to_dict` returns it.

        Returns
        -------
        Calibrator

        Raises
        ------
        ValueError
            For anything malformed, including invalid settings.
        """
        if not isinstance(d, dict):
            raise ValueError(f"calibrator state must be a JSON object, got {type(d).__name__}")
        if d.get("version") != _JSON_VERSION:
            raise ValueError(f"unsupported calibrator version {d.get('version')!r}")
        for key in ("n_calib", "bits", "law", "per_head", "head_axis", "floor", "layers"):
            if key not in d:
                raise ValueError(f"calibrator state lacks field {key!r}")
        if not isinstance(d["layers"], dict):
            raise ValueError("calibrator field 'layers' must be an object")
        try:
            cal = cls(d["n_calib"], d["bits"], d["law"], d["per_head"], head_axis=d["head_axis"],
                      floor=d["floor"])
        except TypeError as exc:
            raise ValueError(f"calibrator settings are invalid: {exc}") from None

        def numbers(name, k, value, *, negative=False):
            """A list of finite numbers, or of equal-length lists of them (per head)."""
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"calibrator layer {k!r}: field {name!r} must hold numbers") from None
            if arr.ndim > 2 or not np.all(np.isfinite(arr)) or (negative and not np.all(arr < 0)):
                need = "finite negative numbers" if negative else "finite numbers"
                raise ValueError(f"calibrator layer {k!r}: field {name!r} must hold {need}")
            return arr

        for k, v in d["layers"].items():
            if not isinstance(v, dict):
                raise ValueError(f"calibrator layer {k!r} must be an object")
            for key in ("calls", "sigma", "min", "clip", "frozen_clip", "frozen_min"):
                if key not in v:
                    raise ValueError(f"calibrator layer {k!r} lacks field {key!r}")
            calls = v["calls"]
            if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
                raise ValueError(f"calibrator layer {k!r}: field 'calls' must be a non-negative integer")
            layer = _Layer()
            layer.calls = calls
            for key in ("sigma", "min", "clip"):
                if not isinstance(v[key], list):
                    raise ValueError(f"calibrator layer {k!r}: field {key!r} must be a list")
                numbers(key, k, v[key])
            layer.sigma, layer.min, layer.clip = list(v["sigma"]), list(v["min"]), list(v["clip"])
            if v["frozen_clip"] is not None:
                # the clip handed to softmax as a static clip: a positive one would be refused
                # there, or silently replaced; refuse it here, where the file is read
                layer.frozen_clip = numbers("frozen_clip", k, v["frozen_clip"], negative=True)
                if v["frozen_min"] is None:
                    raise ValueError(f"calibrator layer {k!r}: 'frozen_clip' without 'frozen_min'")
                layer.frozen_min = numbers("frozen_min", k, v["frozen_min"])
            cal._layers[k] = layer
        return cal

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        """Inverse of :meth:`to_json`; ``ValueError`` for text that is not a valid state.

        Safe on untrusted text (``docs/errors.md``).

        Parameters
        ----------
        text : str, bytes or bytearray
            JSON text written by :meth:`to_json`.

        Returns
        -------
        Calibrator

        Raises
        ------
        TypeError
            If ``text`` is not str, bytes or bytearray.
        ValueError
            If it does not parse (or nests too deeply) or is not a valid state.

        Examples
        --------
        >>> from exaq_cpu.clipping import Calibrator
        >>> Calibrator.from_json('{"version": 1}')
        Traceback (most recent call last):
            ...
        ValueError: calibrator state lacks field 'n_calib'
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        try:
            state = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"calibrator JSON does not parse: {str(exc)[:200]}") from None
        return cls.from_dict(state)

    def save(self, path) -> None:
        """Write :meth:`to_json` to ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            The file, written as UTF-8 JSON (replaced if it exists).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from exaq_cpu.clipping import Calibrator
        >>> cal = Calibrator(n_calib=1)
        >>> _ = cal.observe("a", np.array([[2.0, 1.0, 0.0, -3.0]]))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     cal.save(os.path.join(folder, "clips.json"))
        ...     back = Calibrator.load(os.path.join(folder, "clips.json"))
        >>> back["a"] == cal["a"]
        True
        """
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json(indent=1))

    @classmethod
    def load(cls, path) -> Calibrator:
        """Read a file written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The JSON file.

        Returns
        -------
        Calibrator

        Raises
        ------
        ValueError
            If the file is not a valid state (as :meth:`from_json`).
        FileNotFoundError
            If the file does not exist.
        """
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def __repr__(self) -> str:
        fz = sum(v.frozen_clip is not None for v in self._layers.values())
        return (f"Calibrator(n_calib={self.n_calib}, bits={self.bits}, law={self.law!r}, "
                f"per_head={self.per_head}, layers={len(self._layers)}, frozen={fz})")
