"""Integration drivers of generated modules (flywheel_sd.engine.drivers / .modules).

Fixed-step drivers are checked bit for bit against PySD's loop; rk45/rk23 against
scipy.integrate.solve_ivp itself (same rhs calls, nfev, accepted steps, dense output);
ensembles against their members' single runs; the numba backend against the python one.

rk45/rk23 and SciPy: bit identity is CPU-dependent. The driver sums each stage
combination left to right, one rounded product and one rounded add per term; SciPy calls
np.dot, and NumPy/OpenBLAS pick a kernel per CPU (FMA, SIMD partial sums), so on some
machines (e.g. AVX-512/FMA Xeons) its sums differ in the last bit. `dot_is_sequential`
probes this machine: where np.dot sums as the driver does, the parity tests also assert the
exact, call-for-call properties; everywhere they assert the CPU-independent ones (see
`check_parity`).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from flywheel_sd.engine import modules
from flywheel_sd.engine.drivers import driver_source
from flywheel_sd.engine.modules import (
    NumbaUnavailableError,
    import_module,
    load_module,
    write_module,
)

HAVE_NUMBA = modules.numba_available()
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")
REPO = Path(__file__).resolve().parent.parent


def body(n: int, rhs: str, nonneg=()) -> str:
    """A model body: n states, `rhs` lines (dy[i] = ...), record writes (t, y...)."""
    flags = ", ".join("True" if i in nonneg else "False" for i in range(n))
    return (
        f"N_STATES = {n}\nN_OUT = {n + 1}\nNONNEG = np.array([{flags}], dtype=np.bool_)\n"
        "CALLS = []\n\n\n@_jit\ndef rhs(t, y, c, dy):\n"
        + textwrap.indent(textwrap.dedent(rhs).strip(), "    ")
        + "\n\n\n"
        "@_jit\ndef record(t, y, c, row):\n    row[0] = t\n"
        "    for i in range(y.shape[0]):\n        row[i + 1] = y[i]\n"
    )


DECAY = body(1, "dy[0] = -c[0] * y[0]")
# a pulse switched on at c[2]: a breakpoint there must not be smeared
LOGISTIC = body(1, "dy[0] = c[0] * y[0] * (1.0 - y[0] / c[1]) + (c[3] if t >= c[2] else 0.0)")
DRAIN = body(2, "dy[0] = -1.0\ndy[1] = -1.0", nonneg=(0,))
OSC = body(2, "dy[0] = y[1]\ndy[1] = -c[0] * c[0] * y[0]")
VDP = body(
    2,
    "dy[0] = y[1]\ndy[1] = c[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]"
    " + (c[1] if t >= c[2] else 0.0)",
)
BLOWUP = body(1, "dy[0] = y[0] * y[0]")
NAN_LATE = body(1, "dy[0] = -y[0] if t < c[0] else math.nan")

PROBLEMS = {  # name: (body, c, y0)
    "decay": (DECAY, [0.7], [3.0]),
    "logistic": (LOGISTIC, [0.8, 100.0, 3.7, 5.0], [1.0]),
    "osc": (OSC, [2.0], [1.0, 0.0]),
    "vdp": (VDP, [1.0, 0.5, 3.7], [2.0, 0.0]),
}
# where a problem's rhs jumps (its switch time c[2]); the others are smooth
JUMPS = {"logistic": 3.7, "vdp": 3.7}


def build(directory: Path, name: str, text: str, backend: str = "python", logged=False):
    """Write and import a module; `logged` (python backend) appends each rhs call's
    (t, *y) to the module's CALLS list."""
    if logged:
        name += "_logged"
        text = text.replace(
            "def rhs(t, y, c, dy):\n",
            "def rhs(t, y, c, dy):\n    CALLS.append((t, *[float(v) for v in y]))\n",
        )
    mod = load_module(directory / f"{name}_{backend}.py", text, backend)
    mod.CALLS.clear()  # same text, same module (named by content): start a fresh log
    return mod


def run_adaptive(mod, c, y0, edges, save_t, rtol, atol, max_step=np.inf, method="rk45"):
    out = np.full((len(save_t), mod.N_OUT), np.nan)
    stats = np.zeros(4, np.int64)
    t_end = getattr(mod, method)(
        np.asarray(c, float),
        np.asarray(y0, float),
        np.asarray(edges, float),
        np.asarray(save_t, float),
        rtol,
        atol,
        max_step,
        out,
        stats,
    )
    return out, stats, t_end


def scipy_reference(mod, c, y0, edges, save_t, rtol, atol, max_step=np.inf, method="RK45"):
    """flywheel_sd.engine.simulate's adaptive loop: solve_ivp per segment, evaluated inside."""
    c = np.asarray(c, float)
    y = np.asarray(y0, float)
    save_t = np.asarray(save_t, float)
    t1 = edges[-1]
    ys = np.repeat(y[None, :], len(save_t), axis=0)
    nfev = n_steps = 0
    ts = []
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        lo = a + 1e-11 * max(1.0, abs(a))
        hi = b - 1e-11 * max(1.0, abs(b))

        def fun(t, y, _lo=lo, _hi=hi):
            dy = np.empty(len(y))
            mod.rhs(min(max(t, _lo), _hi), y, c, dy)
            return dy

        sol = solve_ivp(
            fun,
            (a, b),
            y,
            method=method,
            rtol=rtol,
            atol=atol,
            max_step=max_step,
            dense_output=True,
        )
        assert sol.status == 0, sol.message
        nfev += sol.nfev
        n_steps += len(sol.t) - 1
        ts.extend(sol.t[1:])
        here = (save_t >= a) & ((save_t < b) | (b >= t1))
        if here.any():
            ys[here] = sol.sol(np.clip(save_t[here], a, b)).T
        y = sol.y[:, -1]
    ys[save_t >= t1] = y
    return {"nfev": nfev, "n_steps": n_steps, "ts": np.array(ts), "ys": ys, "y_end": y}


# -- module assembly ------------------------------------------------------------------
def test_driver_source_is_pasted_without_placeholders():
    src = driver_source()
    assert src.startswith("# >>> driver source begins\n")
    assert src.rstrip().endswith("# <<< driver source ends")
    assert "NotImplementedError" not in src and "_jit = _pjit" not in src
    for name in (
        "def euler(",
        "def rk4(",
        "def rk45(",
        "def rk23(",
        "def fixed_members(",
        "def adaptive_members(",
    ):
        assert name in src
    compile(src, "<drivers>", "exec")


def test_write_module_is_idempotent_and_atomic(tmp_path):
    path = tmp_path / "m.py"
    assert write_module(path, DECAY, "python") is True
    st = path.stat()
    assert write_module(path, DECAY, "python") is False  # same text: untouched
    assert path.stat().st_mtime_ns == st.st_mtime_ns
    assert write_module(path, DECAY + "\n# changed\n", "python") is True
    # a changed file's mtime moves by at least a second: .pyc and Numba's index see it
    assert path.stat().st_mtime_ns >= st.st_mtime_ns + 1_000_000_000
    assert [p.name for p in tmp_path.iterdir() if p.name != "__pycache__"] == ["m.py"]
    mod = import_module(path)
    assert mod.__name__ == modules.module_name(path) and sys.modules[mod.__name__] is mod
    assert import_module(path, "python") is mod  # once per file content
    assert mod.__name__ != modules.module_name(tmp_path / "other.py", b"other text")
    with pytest.raises(ValueError, match="backend"):
        import_module(path, "numba")
    with pytest.raises(ValueError, match="backend"):
        write_module(path, DECAY, "fortran")


def test_numba_backend_missing_is_a_clear_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now fails
    with pytest.raises(NumbaUnavailableError, match="backend='python'"):
        write_module(tmp_path / "m.py", DECAY, "numba")
    assert issubclass(NumbaUnavailableError, ImportError)
    assert not (tmp_path / "m.py").exists()
    write_module(tmp_path / "m.py", DECAY, "python")  # the fallback works


# -- fixed step -----------------------------------------------------------------------
def pysd_loop(mod, c, y0, t0, dt, save, nonneg, rk4=False):
    """flywheel_sd.engine.simulate's fixed-step loop (NumPy arrays) on the module's rhs."""

    def f(t, y):
        dy = np.empty(len(y))
        mod.rhs(t, y, c, dy)
        return dy

    y, t, rows = np.array(y0, float), t0, []
    for k in range(len(save) - 1):
        if save[k]:
            rows.append([t, *y])
        if rk4:
            h = dt
            k1 = f(t, y)
            k2 = f(t + h / 2, y + h / 2 * k1)
            k3 = f(t + h / 2, y + h / 2 * k2)
            k4 = f(t + h, y + h * k3)
            y_next = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        else:
            y_next = y + f(t, y) * dt
        y = np.where(nonneg, np.maximum(y_next, 0.0), y_next)
        t = t + dt
    if save[-1]:
        rows.append([t, *y])
    return np.array(rows)


def test_euler_equals_closed_form_of_the_recursion(tmp_path):
    mod = build(tmp_path, "decay", DECAY)
    # k*dt = 1/4: every Euler step multiplies by exactly 3/4 (exact for 32 steps)
    n, y0 = 32, 1024.0
    save = np.zeros(n + 1, bool)
    save[::4] = True
    save[-1] = True
    out = np.full((save.sum(), 2), np.nan)
    assert mod.euler(np.array([1.0]), np.array([y0]), 0.0, 0.25, save, out) == 0
    steps = np.flatnonzero(save)
    assert list(out[:, 0]) == [0.25 * k for k in steps]
    assert list(out[:, 1]) == [float(y0 * Fraction(3, 4) ** int(k)) for k in steps]


FORCED = body(2, "dy[0] = y[1]\ndy[1] = -y[0] - c[0] * y[1] + math.sin(c[1] * t)")


@pytest.mark.parametrize("method", ["euler", "rk4"])
@pytest.mark.parametrize("problem", ["vdp", "forced"])
def test_fixed_step_equals_pysd_loop_bit_for_bit(tmp_path, method, problem):
    mod = build(tmp_path, problem, VDP if problem == "vdp" else FORCED)
    c, y0 = np.array([1.3, 0.5, 3.7]), np.array([2.0, 0.0])
    save = np.zeros(201, bool)
    save[::3] = True
    out = np.full((save.sum(), 3), np.nan)
    assert getattr(mod, method)(c, y0, 0.0, 0.05, save, out) == 0
    ref = pysd_loop(mod, c, y0, 0.0, 0.05, save, mod.NONNEG, rk4=method == "rk4")
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_nonneg_stock_clips_at_zero(tmp_path, method):
    mod = build(tmp_path, "drain", DRAIN)
    save = np.ones(6, bool)
    out = np.full((6, 3), np.nan)
    assert getattr(mod, method)(np.zeros(0), np.array([0.5, 0.5]), 0.0, 0.2, save, out) == 0
    ref = pysd_loop(mod, np.zeros(0), [0.5, 0.5], 0.0, 0.2, save, mod.NONNEG)
    assert np.array_equal(out, ref)
    assert list(out[3:, 1]) == [0.0, 0.0, 0.0]  # 0.5 - 3*0.2 < 0: clipped, stays 0
    assert out[-1, 2] < -0.4  # the other stock is not in NONNEG


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_fixed_step_reports_first_nonfinite_step(tmp_path, method):
    mod = build(tmp_path, "blowup", BLOWUP)
    save = np.ones(11, bool)
    out = np.full((11, 2), np.nan)
    with np.errstate(all="ignore"):  # python backend: NumPy scalars warn on overflow
        status = getattr(mod, method)(np.zeros(0), np.array([1e100]), 0.0, 1.0, save, out)
    k = status - 1
    assert status > 0 and np.isfinite(out[: k + 1]).all() and np.isnan(out[k + 1 :]).all()
    assert out[k, 0] == k  # the step that failed started at t0 + k*dt from a finite state


def test_rk4_converges_at_fourth_order(tmp_path):
    mod = build(tmp_path, "decay", DECAY)
    errors = []
    for dt in (0.2, 0.1, 0.05):
        n = round(2.0 / dt)
        save = np.zeros(n + 1, bool)
        save[-1] = True
        out = np.zeros((1, 2))
        assert mod.rk4(np.array([0.7]), np.array([3.0]), 0.0, dt, save, out) == 0
        errors.append(abs(out[0, 1] - 3.0 * math.exp(-0.7 * out[0, 0])))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 3.5) & (orders < 4.5)), orders


# -- adaptive: parity with solve_ivp ---------------------------------------------------
EDGES = {"one segment": [0.0, 10.0], "breakpoint": [0.0, 3.7, 10.0]}
SAVE = np.concatenate([[-1.0], np.linspace(0.0, 10.0, 41), [3.7, 10.0 + 1e-12, 11.0]])
SAVE.sort()
# Below sqrt(eps) ~ 1.5e-8 the rounding of the error estimate (relative ~ eps / rtol)
# exceeds the tolerance itself: accept/reject decisions there are on a knife edge.
KNIFE_EDGE_RTOL = math.sqrt(np.finfo(float).eps)


def _sequential(M, v):
    """M @ v as the driver sums it: left to right, one rounded product and one rounded
    add per term (Python floats: no FMA)."""
    out = []
    for row in np.atleast_2d(M).tolist():
        acc = 0.0
        for x, w in zip(row, v.tolist()):
            acc += x * w
        out.append(acc)
    return np.array(out)


@functools.cache
def dot_is_sequential(n: int) -> bool:
    """Whether np.dot on this machine sums as the driver does, for the products that
    decide SciPy's RK45/RK23 steps with `n` states: the stages K[:s].T @ A[s, :s], the
    step K[:-1].T @ B, the error K.T @ E and its norm (np.linalg.norm: a dot). Several
    random inputs, with rows scaled over six decades. NumPy/OpenBLAS pick their kernels
    per CPU (FMA, SIMD partial sums), so the answer is the CPU's. (The dense output,
    K.T @ P and Q @ p, is not covered: the tests hold it to 1e-12, not to the bit.)"""
    from scipy.integrate._ivp.rk import RK23, RK45

    rng = np.random.default_rng(20240612)
    for cls in (RK45, RK23):
        ns = len(cls.B)
        for _ in range(8):
            K = rng.standard_normal((ns + 1, n)) * 10.0 ** rng.uniform(-3, 3, (ns + 1, 1))
            pairs = [(K[:s].T, cls.A[s, :s]) for s in range(1, ns)]
            pairs += [(K[:-1].T, cls.B), (K.T, cls.E)]
            for M, v in pairs:
                if not np.array_equal(np.dot(M, v), _sequential(M, v)):
                    return False
            x = K.T @ cls.E
            if np.linalg.norm(x) != math.sqrt(_sequential(x, x)[0]):
                return False
    return True


def check_parity(problem, edges, rtol, atol, out, stats, t_end, mine, ref, theirs, y0):
    """The driver's run against solve_ivp's (`ref`; `mine`/`theirs`: the rhs calls, rows
    (t, *y), or None when not logged).

    CPU-independent (asserted on every machine):

    * the run completes to the end, rows are recorded at the true save times, save times
      before t0 hold y0, and those at/after t1 the end state (equal rows, not interpolants);
    * the states agree with SciPy's to the requested tolerance at the save points,
      |mine - theirs| <= rtol |y| + atol: both runs keep every step's local error within
      it. With the step decisions the same (asserted below for rtol above
      KNIFE_EDGE_RTOL) the two differ by propagated rounding only, over the whole run.
      At a tighter rtol they may take other steps; the method's contract then covers the
      stretch where the rhs is smooth over every step: everywhere when its jump is an edge,
      else the save times at least one of SciPy's steps before the step that crosses it
      (the error estimate of a step across an undeclared jump is no error bound);
    * rtol > KNIFE_EDGE_RTOL: the same algorithm, the same decisions: nfev and accepted
      steps equal SciPy's, and every rhs call is at SciPy's time to within rtol (t - t0):
      the error estimate's relative rounding is ~ eps / rtol (its sum cancels), so each
      step size agrees to ~ eps / rtol << rtol, and the times to that times t - t0.

    Needs the sequential-dot probe (`dot_is_sequential`; asserted where it holds): the
    same rhs calls, time and state (to 1e-12 relative), and the same end state to the
    last bit; nfev and steps equal at every tolerance; dense output to 1e-12.
    """
    save = SAVE
    n = len(y0)
    jump = JUMPS.get(problem)
    assert stats[3] == 0 and t_end == edges[-1]
    assert np.array_equal(out[:, 0], save)  # recorded at the true save time
    assert np.array_equal(out[save < edges[0], 1:], np.repeat([y0], (save < edges[0]).sum(), 0))
    end = out[save >= edges[-1], 1:]
    assert np.array_equal(end, np.repeat(end[:1], len(end), 0))  # the end state, not interpolated

    ys = ref["ys"]
    bound = rtol * np.maximum(np.abs(out[:, 1:]), np.abs(ys)) + atol
    within = np.abs(out[:, 1:] - ys) <= bound
    covered = np.ones(len(save), bool)
    if rtol <= KNIFE_EDGE_RTOL and jump is not None and jump not in edges:
        starts = np.concatenate([[edges[0]], ref["ts"]])
        before = starts[starts < jump]
        covered = save <= (before[-2] if len(before) > 1 else edges[0])
        assert covered[save >= 0].sum() >= 5  # the check still covers part of the run
    bad = np.flatnonzero(covered[:, None] & ~within)
    assert bad.size == 0, (
        f"off SciPy by more than rtol |y| + atol at t = {save[bad // n][:5]}: "
        f"{np.max(np.abs(out[:, 1:] - ys)[covered] / bound[covered]):.3g} x the tolerance"
    )

    if rtol > KNIFE_EDGE_RTOL:
        assert stats[0] == ref["nfev"] and stats[1] == ref["n_steps"]
        if mine is not None:
            assert len(mine) == len(theirs) == stats[0]
            dt = np.abs(mine[:, 0] - theirs[:, 0])
            limit = rtol * np.abs(theirs[:, 0] - edges[0]) + 4 * np.spacing(theirs[:, 0])
            assert np.all(dt <= limit), np.max(dt / limit)

    if dot_is_sequential(n):
        assert stats[0] == ref["nfev"] and stats[1] == ref["n_steps"]
        if mine is not None:
            assert len(mine) == len(theirs) == stats[0]
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=0)
        np.testing.assert_allclose(out[:, 1:], ys, rtol=1e-12, atol=0)
        assert np.array_equal(end, np.repeat(ref["y_end"][None], len(end), 0))  # exactly


@pytest.mark.parametrize("method", ["rk45", "rk23"])
@pytest.mark.parametrize("edges", list(EDGES), ids=list(EDGES))
@pytest.mark.parametrize("tol", [(1e-3, 1e-6), (1e-6, 1e-9), (1e-10, 1e-12)])
@pytest.mark.parametrize("problem", ["decay", "logistic"])
def test_adaptive_repeats_solve_ivp_call_for_call(tmp_path, problem, tol, edges, method):
    """Scalar problems, every tolerance (see `check_parity` for what is asserted where).
    CPU-independent: states within rtol |y| + atol of SciPy's, end state and save times;
    same nfev, steps and rhs-call times for rtol above KNIFE_EDGE_RTOL. Needs the
    sequential-dot probe: every rhs call (time and state) SciPy's, to 1e-12; nfev and steps
    SciPy's at every tolerance; the end state to the last bit."""
    text, c, y0 = PROBLEMS[problem]
    mod = build(tmp_path, problem, text, logged=True)
    edges = EDGES[edges]
    out, stats, t_end = run_adaptive(mod, c, y0, edges, SAVE, *tol, method=method)
    mine = np.array(mod.CALLS)
    mod.CALLS.clear()
    ref = scipy_reference(mod, c, y0, edges, SAVE, *tol, method=method.upper())
    theirs = np.array(mod.CALLS)
    check_parity(problem, edges, *tol, out, stats, t_end, mine, ref, theirs, y0)


@pytest.mark.parametrize("edges", list(EDGES), ids=list(EDGES))
@pytest.mark.parametrize("rtol", [1e-3, 1e-6])
@pytest.mark.parametrize("problem", ["osc", "vdp"])
def test_rk45_systems_take_solve_ivps_steps(tmp_path, problem, rtol, edges):
    """Two states (see `check_parity`). CPU-independent: the step decisions are SciPy's
    (nfev, accepted steps), every rhs call at SciPy's time to within rtol (t - t0), the
    states within rtol |y| + atol of SciPy's. Needs the sequential-dot probe (for two
    states it often fails: BLAS kernels): the same rhs calls to the last bit."""
    text, c, y0 = PROBLEMS[problem]
    mod = build(tmp_path, problem, text, logged=True)
    edges = EDGES[edges]
    out, stats, t_end = run_adaptive(mod, c, y0, edges, SAVE, rtol, rtol * 1e-3)
    mine = np.array(mod.CALLS)
    mod.CALLS.clear()
    ref = scipy_reference(mod, c, y0, edges, SAVE, rtol, rtol * 1e-3)
    theirs = np.array(mod.CALLS)
    check_parity(problem, edges, rtol, rtol * 1e-3, out, stats, t_end, mine, ref, theirs, y0)


def test_rk45_max_step_matches_solve_ivp(tmp_path):
    """max_step caps the steps as SciPy's does (see `check_parity`). CPU-independent: the
    same nfev and accepted steps (>= 40: the cap binds), states within rtol |y| + atol of
    SciPy's. Needs the sequential-dot probe: states to 1e-12."""
    text, c, y0 = PROBLEMS["logistic"]
    mod = build(tmp_path, "logistic", text)
    edges = EDGES["breakpoint"]
    out, stats, t_end = run_adaptive(mod, c, y0, edges, SAVE, 1e-6, 1e-9, 0.25)
    ref = scipy_reference(mod, c, y0, edges, SAVE, 1e-6, 1e-9, 0.25)
    assert ref["n_steps"] >= 40
    check_parity("logistic", edges, 1e-6, 1e-9, out, stats, t_end, None, ref, None, y0)


def test_parity_checks_still_bite_without_the_exact_ones(tmp_path, monkeypatch):
    """On any CPU the tolerance checks must catch a driver that is not SciPy's method:
    with the probe forced to "not sequential" (the exact checks off), an RK45 whose
    5th-order weights are perturbed in the 4th digit fails `check_parity`."""
    from flywheel_sd.engine import drivers

    monkeypatch.setattr(sys.modules[__name__], "dot_is_sequential", lambda n: False)
    broken = driver_source().replace(
        "_RK45_B = np.array([35 / 384,", "_RK45_B = np.array([35 / 384 * (1 + 1e-4),"
    )
    assert broken != driver_source()
    monkeypatch.setattr(drivers, "driver_source", lambda: broken)
    monkeypatch.setattr(modules, "driver_source", lambda: broken, raising=False)
    text, c, y0 = PROBLEMS["decay"]
    mod = build(tmp_path, "decay_broken", text + "\n# broken tableau\n")
    edges = EDGES["one segment"]
    out, stats, t_end = run_adaptive(mod, c, y0, edges, SAVE, 1e-6, 1e-9)
    ref = scipy_reference(mod, c, y0, edges, SAVE, 1e-6, 1e-9)
    with pytest.raises(AssertionError):
        check_parity("decay", edges, 1e-6, 1e-9, out, stats, t_end, None, ref, None, y0)


def test_breakpoint_is_not_smeared(tmp_path):
    """With the switch time as an edge, no rhs call inside [a, b] sees the other side."""
    text, c, y0 = PROBLEMS["logistic"]
    mod = build(tmp_path, "logistic", text, logged=True)
    run_adaptive(mod, c, y0, EDGES["breakpoint"], SAVE, 1e-6, 1e-9)
    calls = np.array(mod.CALLS)[:, 0]
    assert calls.min() > 0.0 and calls.max() < 10.0 and not np.any(calls == 3.7)


RATIONAL = body(
    2,
    """
dy[0] = y[1] / t
dy[1] = y[1] * (y[0] + 2.0 * y[1] - 1.0) / (t * (y[0] - 1.0))
""",
)


@pytest.mark.parametrize("method", ["rk45", "rk23"])
@pytest.mark.parametrize("rtol", [1e-3, 1e-6])
def test_adaptive_respects_tolerances(tmp_path, rtol, method):
    """SciPy's own accuracy test (test_ivp.test_integration): the rational problem on
    [5, 9], error in tolerance units, rms over the states, below 5 at every save time."""
    mod = build(tmp_path, "rational", RATIONAL)
    atol = rtol * 1e-3
    t = np.linspace(5.0, 9.0, 41)
    out, stats, _ = run_adaptive(mod, [], [1 / 3, 2 / 9], [5.0, 9.0], t, rtol, atol, method=method)
    y_true = np.stack([t / (t + 10), 10 * t / (t + 10) ** 2], 1)
    e = (out[:, 1:] - y_true) / (atol + rtol * np.abs(y_true))
    e = np.sqrt(np.mean(e**2, axis=1))
    assert stats[3] == 0 and np.all(e < 5), e.max()


def test_adaptive_failure_statuses(tmp_path):
    """CPU-independent: y' = y^2 blows up at t = 1: the same failure as SciPy's (step
    too small), at SciPy's time to within rtol t (rtol 1e-6 is above KNIFE_EDGE_RTOL: the
    same steps up to there); a NaN derivative is its own status. Needs the sequential-dot
    probe: the same nfev, steps and end time to the last bit (the last steps, driven down
    to the minimum step, are on a knife edge otherwise)."""
    blow = build(tmp_path, "blowup", BLOWUP)
    save = np.linspace(0.0, 2.0, 21)
    with np.errstate(all="ignore"):
        out, stats, t_end = run_adaptive(blow, [], [1.0], [0.0, 2.0], save, 1e-6, 1e-9)

        def fun(t, y):
            return y * y

        sol = solve_ivp(fun, (0.0, 2.0), [1.0], rtol=1e-6, atol=1e-9)
    assert sol.status == -1 and "less than spacing" in sol.message
    assert stats[3] == 1 and 0.99 < t_end < 1.01  # blows up at t = 1
    assert abs(t_end - sol.t[-1]) <= 1e-6 * t_end
    if dot_is_sequential(1):
        assert stats[0] == sol.nfev and stats[1] == len(sol.t) - 1 and t_end == sol.t[-1]
    done = save < t_end
    assert np.isfinite(out[done]).all() and np.isnan(out[~done]).all()

    late = build(tmp_path, "nan_late", NAN_LATE)
    with np.errstate(all="ignore"):
        _, stats, t_end = run_adaptive(late, [0.5], [1.0], [0.0, 2.0], save, 1e-6, 1e-9)
        assert stats[3] == 2 and 0.49 < t_end <= 0.5  # NaN derivative: not "step too small"
        _, stats, t_end = run_adaptive(late, [-1.0], [1.0], [0.0, 2.0], save, 1e-6, 1e-9)
    assert stats[3] == 2 and stats[0] == 1 and t_end == 0.0  # at once, from f(t0)


def test_no_states_and_empty_segments(tmp_path):
    mod = build(tmp_path, "none", body(0, "pass"))
    save = np.array([0.0, 1.0, 5.0])
    out, stats, t_end = run_adaptive(mod, [], [], [0.0, 2.0, 2.0, 5.0], save, 1e-6, 1e-9)
    # SciPy counts one rhs call and one (constant) step per non-empty segment
    sol = solve_ivp(lambda t, y: np.zeros(0), (0.0, 2.0), np.zeros(0))
    assert (sol.nfev, len(sol.t) - 1) == (1, 1)
    assert list(stats) == [2, 2, 0, 0] and t_end == 5.0
    assert np.array_equal(out[:, 0], save)


def check_bad_shapes(mod):
    """Numba does no bounds checks: a driver refuses arrays that do not fit the model."""
    c, y0, save = np.array([0.7]), np.array([3.0]), np.ones(5, bool)
    out = np.zeros((4, 2))  # one row short
    assert mod.euler(c, y0, 0.0, 0.1, save, out) == -1 and not out.any()
    assert mod.rk4(c, np.zeros(2), 0.0, 0.1, save, np.zeros((5, 2))) == -1
    assert mod.euler(c, y0, 0.0, 0.1, save, np.zeros((5, 1))) == -1  # N_OUT columns
    stats = np.zeros(4, np.int64)
    t = mod.rk45(c, y0, np.array([0.0, 1.0]), np.linspace(0, 1, 5), 1e-6, 1e-9, np.inf, out, stats)
    assert stats[3] == 3 and t == 0.0 and not out.any()
    C, Y0 = np.ones((3, 1)), np.ones((3, 1))
    STATUS = np.full(3, 7, np.int64)
    both = np.arange(2)
    assert (
        mod.fixed_members(C, Y0, 0.0, 0.1, save, 5, both, np.zeros((2, 5, 2)), STATUS, False) == -1
    )  # one member short
    assert (
        mod.fixed_members(C, Y0, 0.0, 0.1, save, 5, both, np.zeros((3, 4, 2)), STATUS, False) == -1
    )  # one saved row short
    assert (
        mod.fixed_members(
            C, Y0, 0.0, 0.1, save, 5, np.array([0, 2]), np.zeros((3, 5, 2)), STATUS, False
        )
        == -1
    )  # no column 2
    assert (STATUS == 7).all()
    assert (
        mod.adaptive_members(
            C,
            Y0,
            np.array([0.0, 1.0]),
            np.linspace(0, 1, 5),
            1e-6,
            1e-9,
            np.inf,
            both,
            np.zeros((3, 5, 2)),
            np.zeros((2, 4), np.int64),
            False,
        )
        == -1
    )


def test_shapes_that_do_not_fit_are_refused(tmp_path):
    check_bad_shapes(build(tmp_path, "decay", DECAY))


# -- ensembles --------------------------------------------------------------------------
def ensemble_inputs(n=6):
    rates = np.geomspace(0.01, 50.0, n)  # from smooth to sharply decaying
    C = rates[:, None].copy()
    Y0 = np.linspace(1.0, 3.0, n)[:, None].copy()
    return C, Y0


def check_ensembles(mod):
    C, Y0 = ensemble_inputs()
    n = len(C)
    save_t = np.linspace(0.0, 10.0, 21)
    edges = np.array([0.0, 4.0, 10.0])
    OUT = np.full((n, 21, 2), np.nan)
    STATS = np.zeros((n, 4), np.int64)
    both = np.arange(2)
    assert (
        mod.adaptive_members(C, Y0, edges, save_t, 1e-6, 1e-9, np.inf, both, OUT, STATS, False)
        == 0
    )
    for m in range(n):
        out, stats, _ = run_adaptive(mod, C[m], Y0[m], edges, save_t, 1e-6, 1e-9)
        assert np.array_equal(OUT[m], out) and np.array_equal(STATS[m], stats)
    # per-member step control: each member's own nfev, not a shared step for all
    assert len(set(STATS[:, 0])) == n and (STATS[:, 3] == 0).all()
    assert STATS[0, 0] < STATS[-1, 0] / 3

    save = np.zeros(101, bool)
    save[::10] = True
    for rk4_method, single in ((False, "euler"), (True, "rk4")):
        OUT = np.full((n, 11, 2), np.nan)
        STATUS = np.full(n, -1, np.int64)
        with np.errstate(all="ignore"):  # the stiffest member oscillates and grows
            assert mod.fixed_members(C, Y0, 0.0, 0.1, save, 11, both, OUT, STATUS, rk4_method) == 0
            for m in range(n):
                out = np.full((11, 2), np.nan)
                status = getattr(mod, single)(C[m], Y0[m], 0.0, 0.1, save, out)
                assert STATUS[m] == status
                assert np.array_equal(OUT[m], out, equal_nan=True)
    return STATS


def test_ensembles_python_backend(tmp_path):
    check_ensembles(build(tmp_path, "decay", DECAY))


# -- numba ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def numba_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("numba_models")


@needs_numba
@pytest.mark.slow
def test_numba_ensembles_and_single_runs(numba_dir):
    nb = build(numba_dir, "decay", DECAY, "numba")
    stats = check_ensembles(nb)
    check_bad_shapes(nb)
    py = check_ensembles(build(numba_dir, "decay", DECAY, "python"))
    assert np.array_equal(stats, py)


@needs_numba
@pytest.mark.slow
@pytest.mark.parametrize("problem", ["vdp", "logistic"])
def test_numba_backend_equals_python_backend(numba_dir, problem):
    text, c, y0 = PROBLEMS[problem]
    nb, py = build(numba_dir, problem, text, "numba"), build(numba_dir, problem, text)
    c, y0 = np.array(c, float), np.array(y0, float)
    save = np.zeros(401, bool)
    save[::4] = True
    for method in ("euler", "rk4"):
        a, b = np.zeros((101, 3)), np.zeros((101, 3))
        assert getattr(nb, method)(c, y0, 0.0, 0.025, save, a) == 0
        assert getattr(py, method)(c, y0, 0.0, 0.025, save, b) == 0
        assert np.array_equal(a, b)
    for method in ("rk45", "rk23"):
        a, sa, _ = run_adaptive(nb, c, y0, EDGES["breakpoint"], SAVE, 1e-6, 1e-9, method=method)
        b, sb, _ = run_adaptive(py, c, y0, EDGES["breakpoint"], SAVE, 1e-6, 1e-9, method=method)
        assert np.array_equal(sa, sb)
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)


CACHE_PROBE = """
import json, sys, time
import numpy as np
from pathlib import Path
from flywheel_sd.engine.modules import load_module
mod = load_module(Path(sys.argv[1]), sys.argv[2], "numba")
c, y0 = np.array([1.0, 0.5, 3.7]), np.array([2.0, 0.0])
save, save_t = np.ones(101, bool), np.linspace(0.0, 10.0, 101)
edges = np.array([0.0, 3.7, 10.0])
C, Y0 = np.tile(c, (4, 1)), np.tile(y0, (4, 1))
calls = {
    "euler": lambda: mod.euler(c, y0, 0.0, 0.1, save, np.zeros((101, 3))),
    "rk4": lambda: mod.rk4(c, y0, 0.0, 0.1, save, np.zeros((101, 3))),
    "rk45": lambda: mod.rk45(c, y0, edges, save_t, 1e-6, 1e-9, np.inf, np.zeros((101, 3)),
                             np.zeros(4, np.int64)),
    "fixed_members": lambda: mod.fixed_members(C, Y0, 0.0, 0.1, save, 101, np.arange(3),
                                               np.zeros((4, 101, 3)), np.zeros(4, np.int64),
                                               False),
    "adaptive_members": lambda: mod.adaptive_members(C, Y0, edges, save_t, 1e-6, 1e-9,
                                                     np.inf, np.arange(3),
                                                     np.zeros((4, 101, 3)),
                                                     np.zeros((4, 4), np.int64), False),
}
report = {}
for name, call in calls.items():
    start = time.perf_counter()
    call()
    d = getattr(mod, name)
    report[name] = dict(seconds=time.perf_counter() - start,
                        hits=sum(d.stats.cache_hits.values()),
                        misses=sum(d.stats.cache_misses.values()))
print(json.dumps(report))
"""


@needs_numba
@pytest.mark.slow
def test_numba_disk_cache_serves_a_second_process(tmp_path):
    path = tmp_path / "vdp_cached.py"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def probe(path):
        res = subprocess.run(
            [sys.executable, "-c", CACHE_PROBE, str(path), VDP],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return json.loads(res.stdout.strip().splitlines()[-1])

    first = probe(path)
    mtime = path.stat().st_mtime_ns
    second = probe(path)
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    # moved with its __pycache__ (copytree keeps mtimes): Numba's cached code re-imports
    # its module by name, which a path-derived name would break (ModuleNotFoundError)
    moved = tmp_path / "moved" / path.name
    shutil.copytree(path.parent / "__pycache__", moved.parent / "__pycache__")
    shutil.copy2(path, moved)
    third = probe(moved)
    for name in first:
        assert first[name]["misses"] == 1 and first[name]["hits"] == 0, (name, first)
        for later in (second, third):
            assert later[name]["misses"] == 0 and later[name]["hits"] == 1, (name, later)
    assert sum(v["seconds"] for v in second.values()) < 0.25 * sum(
        v["seconds"] for v in first.values()
    )


@needs_numba
@pytest.mark.slow
def test_numba_division_by_zero_is_ieee(numba_dir):
    """error_model="numpy": 1/0 in compiled code is inf (a non-finite status), never a
    ZeroDivisionError raised out of a compiled loop; the python backend agrees."""
    text = body(1, "dy[0] = 1.0 / (y[0] - c[0])")
    save = np.ones(3, bool)
    for backend in ("numba", "python"):
        mod = build(numba_dir, "divzero", text, backend)
        out = np.full((3, 2), np.nan)
        with np.errstate(all="ignore"):
            assert mod.euler(np.array([1.0]), np.array([1.0]), 0.0, 0.1, save, out) == 1
