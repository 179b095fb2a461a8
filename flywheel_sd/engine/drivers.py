"""Integration drivers that run inside each generated model module.

The text between the two ``driver source`` markers below is pasted verbatim into every
generated module (see :func:`driver_source`), after the model's own functions, so that
Numba compiles and caches the drivers together with that model's ``rhs`` and ``record``.
The drivers call the generated module's globals:

* ``rhs(t, y, c, dy)``: write dy/dt at (t, y) into ``dy`` (constants ``c``);
* ``record(t, y, c, row)``: write the recorded outputs at (t, y) into ``row``;
* ``NONNEG``: bool array, the stocks Vensim clips at zero after each fixed step;
* ``_jit``, ``_pjit`` (decorators) and ``prange`` (``range`` under plain Python).

Only float64/int64/bool arrays and scalars cross these functions, with no exceptions or
Python objects in the loops, so Numba's nopython mode compiles them.  ``rk45``/``rk23``
reproduce ``scipy.integrate.solve_ivp`` (RK45/RK23, ``dense_output=True``) step for step:
same tableau, initial step, error norm, step controller, end-of-span clamping and dense
output; the same algorithm, the same step decisions (accepted steps and nfev match
SciPy's; below rtol ~1e-8 a decision on a knife edge may go the other way), and
bit-identical where NumPy's dot sums sequentially (CPU-dependent: SciPy's sums go through
np.dot, which may use FMA or SIMD partial sums; the driver adds term by term).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# Placeholders so this file imports and lints on its own; the generated module defines
# the real ones, and they are not part of driver_source().
_jit = _pjit = lambda f: f
prange = range
N_STATES = 0
N_OUT = 0
NONNEG = np.zeros(0, dtype=np.bool_)


def rhs(t, y, c, dy):
    raise NotImplementedError("rhs is defined by the generated model module")


def record(t, y, c, row):
    raise NotImplementedError("record is defined by the generated model module")


def setup(c):
    raise NotImplementedError("setup is defined by the generated model module")


def init(c, y):
    raise NotImplementedError("init is defined by the generated model module")


_BEGIN = "# >>> driver source begins"
_END = "# <<< driver source ends"


def driver_source() -> str:
    """Source text of the drivers, to paste into a generated module after its model."""
    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index("\n" + _BEGIN + "\n") + 1
    end = text.index("\n" + _END + "\n", start) + len(_END) + 2
    return text[start:end]


# >>> driver source begins
# Integration drivers (flywheel_sd.engine.drivers; do not edit in a generated module).

# Status codes (ints, so Numba can return them).
OK = 0
TOO_SMALL_STEP = 1  # SciPy: "Required step size is less than spacing between numbers."
NONFINITE = 2  # a state or derivative became NaN or infinite
BAD_ARGS = 3  # array shapes do not fit the model (nothing was integrated)
# Shapes are checked once per call: Numba does no bounds checks, so a short `out` would
# be written past its end.

# Dormand-Prince 5(4), as scipy.integrate.RK45 (same expressions, hence same doubles).
_RK45_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0])
_RK45_A = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [1 / 5, 0.0, 0.0, 0.0, 0.0],
        [3 / 40, 9 / 40, 0.0, 0.0, 0.0],
        [44 / 45, -56 / 15, 32 / 9, 0.0, 0.0],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0.0],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    ]
)
_RK45_B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84])
_RK45_E = np.array([-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
# Shampine's quartic dense output (the optimum c_6), one row per stage.
_RK45_P = np.array(
    [
        [1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
        [0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
        [
            0.0,
            127303824393 / 49829197408,
            -318862633887 / 49829197408,
            701980252875 / 199316789632,
        ],
        [0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
        [0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
    ]
)

# Bogacki-Shampine 3(2), as scipy.integrate.RK23, with its cubic Hermite dense output.
_RK23_C = np.array([0.0, 1 / 2, 3 / 4])
_RK23_A = np.array([[0.0, 0.0, 0.0], [1 / 2, 0.0, 0.0], [0.0, 3 / 4, 0.0]])
_RK23_B = np.array([2 / 9, 1 / 3, 4 / 9])
_RK23_E = np.array([5 / 72, -1 / 12, -1 / 9, 1 / 8])
_RK23_P = np.array(
    [[1.0, -4 / 3, 5 / 9], [0.0, 1.0, -2 / 3], [0.0, 4 / 3, -8 / 9], [0.0, -1.0, 1.0]]
)

_SAFETY = 0.9
_MIN_FACTOR = 0.2
_MAX_FACTOR = 10.0
_EPS = 2.220446049250313e-16


@_jit
def _pymax(a, b):
    # Python's max(a, b): keeps a unless b is larger (NaN never is), as SciPy's code does.
    return b if b > a else a  # noqa: FURB136 (Numba's max() may treat NaN otherwise)


@_jit
def _pymin(a, b):
    return b if b < a else a  # noqa: FURB136


@_jit
def _npmax(a, b):
    # np.maximum: NaN wins.
    return a if (a >= b or math.isnan(a)) else b


@_jit
def _all_finite(x):
    for i in range(x.shape[0]):  # noqa: SIM110 - a plain loop Numba compiles without a generator
        if not math.isfinite(x[i]):
            return False
    return True


@_jit
def _fits(y0, out, n_rows):
    return (
        y0.shape[0] == N_STATES
        and NONNEG.shape[0] == N_STATES
        and out.shape[0] >= n_rows
        and out.shape[1] >= N_OUT
    )


@_jit
def _fixed_fits(y0, save, out):
    n_rows = 0
    for k in range(save.shape[0]):
        if save[k]:
            n_rows += 1
    return save.shape[0] >= 1 and _fits(y0, out, n_rows)


@_jit
def euler(c, y0, t0, dt, save, out):
    """PySD's fixed-step Euler loop: record, derivative, step, clip NONNEG stocks.

    ``save`` (bool, n_steps + 1) marks the step times to record into successive rows of
    ``out``.  Returns 0, or k + 1 when step k (from a finite state) produced a
    non-finite state; rows after that are left unwritten.  -1: shapes do not fit."""
    if not _fixed_fits(y0, save, out):
        return -1
    n = y0.shape[0]
    y = y0.copy()
    dy = np.empty(n)
    t = t0
    row = 0
    for k in range(save.shape[0] - 1):
        if save[k]:
            record(t, y, c, out[row])
            row += 1
        rhs(t, y, c, dy)
        finite = True
        for i in range(n):
            v = y[i] + dy[i] * dt
            if NONNEG[i] and v < 0.0:
                v = 0.0
            y[i] = v
            if not math.isfinite(v):
                finite = False
        if not finite:
            return k + 1
        t = t + dt  # accumulated, as PySD's clock does
    if save[save.shape[0] - 1]:
        record(t, y, c, out[row])
    return 0


@_jit
def rk4(c, y0, t0, dt, save, out):
    """Classical RK4 on Euler's schedule (Vensim's RK4 Fixed), NONNEG clip after each
    step.  Same arguments and status as :func:`euler`."""
    if not _fixed_fits(y0, save, out):
        return -1
    n = y0.shape[0]
    y = y0.copy()
    k1 = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    yt = np.empty(n)
    h = dt
    h2 = h / 2
    h6 = h / 6
    t = t0
    row = 0
    for k in range(save.shape[0] - 1):
        if save[k]:
            record(t, y, c, out[row])
            row += 1
        rhs(t, y, c, k1)
        for i in range(n):
            yt[i] = y[i] + h2 * k1[i]
        rhs(t + h2, yt, c, k2)
        for i in range(n):
            yt[i] = y[i] + h2 * k2[i]
        rhs(t + h2, yt, c, k3)
        for i in range(n):
            yt[i] = y[i] + h * k3[i]
        rhs(t + h, yt, c, k4)
        finite = True
        for i in range(n):
            v = y[i] + h6 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
            if NONNEG[i] and v < 0.0:
                v = 0.0
            y[i] = v
            if not math.isfinite(v):
                finite = False
        if not finite:
            return k + 1
        t = t + dt
    if save[save.shape[0] - 1]:
        record(t, y, c, out[row])
    return 0


@_jit
def _rms(x):
    # np.linalg.norm(x) / x.size ** 0.5
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i] * x[i]
    return math.sqrt(acc) / x.shape[0] ** 0.5


@_jit
def _eval(t, lo, hi, y, c, dy):
    # The segment is evaluated from inside: min(max(t, lo), hi).
    rhs(_pymin(_pymax(t, lo), hi), y, c, dy)


@_jit
def _initial_step(t0, y0, f0, t_bound, max_step, order, rtol, atol, c, lo, hi, scale, work, f1):
    """scipy.integrate._ivp.common.select_initial_step (direction +1); one rhs call."""
    n = y0.shape[0]
    interval_length = abs(t_bound - t0)
    for i in range(n):
        scale[i] = atol + abs(y0[i]) * rtol
    for i in range(n):
        work[i] = y0[i] / scale[i]
    d0 = _rms(work)
    for i in range(n):
        work[i] = f0[i] / scale[i]
    d1 = _rms(work)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = _pymin(h0, interval_length)
    for i in range(n):
        work[i] = y0[i] + h0 * f0[i]
    _eval(t0 + h0, lo, hi, work, c, f1)
    for i in range(n):
        work[i] = (f1[i] - f0[i]) / scale[i]
    d2 = _rms(work) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = _pymax(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / _pymax(d1, d2)) ** (1 / (order + 1))
    return _pymin(_pymin(_pymin(100 * h0, h1), interval_length), max_step)


@_jit
def _interpolate(ts, t_old, t_new, y_old, K, P, Q, have_q, yout):
    """RkDenseOutput over the step (t_old, t_new] at ts; Q = K.T @ P is built once per
    step (have_q says whether it already is)."""
    n = y_old.shape[0]
    m = P.shape[1]
    if not have_q:
        for i in range(n):
            for k in range(m):
                acc = 0.0
                for j in range(K.shape[0]):
                    acc += K[j, i] * P[j, k]
                Q[i, k] = acc
    h = t_new - t_old
    x = (ts - t_old) / h
    for i in range(n):
        acc = 0.0
        p = 1.0
        for k in range(m):
            p = p * x
            acc += Q[i, k] * p
        yout[i] = h * acc + y_old[i]


@_jit
def _rk_adaptive(c, y0, edges, save_t, rtol, atol, max_step, out, stats, A, B, C, E, P, order):
    """SciPy's explicit RK solver (RungeKutta._step_impl) once per segment of ``edges``;
    ``order`` is the error estimator's.  Returns the time reached."""
    n = y0.shape[0]
    ns = B.shape[0]
    n_save = save_t.shape[0]
    err_exp = -1 / (order + 1)
    rtol = _pymax(rtol, 100 * _EPS)  # validate_tol (SciPy warns; the caller may)
    for q in range(stats.shape[0]):
        stats[q] = 0
    if stats.shape[0] < 4 or edges.shape[0] < 1:
        return math.nan
    if not _fits(y0, out, n_save):
        stats[3] = BAD_ARGS
        return edges[0]
    y = y0.copy()
    y_new = np.empty(n)
    yt = np.empty(n)
    scale = np.empty(n)
    work = np.empty(n)
    K = np.empty((ns + 1, n))
    Q = np.empty((n, P.shape[1]))
    t0 = edges[0]
    nfev = 0
    n_acc = 0
    n_rej = 0
    # save times before t0 take y0
    p = 0
    while p < n_save and save_t[p] < t0:
        record(save_t[p], y, c, out[p])
        p += 1
    t = t0
    for seg in range(edges.shape[0] - 1):
        a = edges[seg]
        b = edges[seg + 1]
        if not b > a:
            continue
        # save times in [a, b) are interpolated here; those >= t1 get the end state below
        q = p
        while q < n_save and save_t[q] < b:
            q += 1
        lo = a + 1e-11 * max(1.0, abs(a))
        hi = b - 1e-11 * max(1.0, abs(b))
        t = a
        _eval(t, lo, hi, y, c, K[ns])
        nfev += 1
        if n == 0:  # SciPy's corner case: one constant "step" to b
            n_acc += 1
            while p < q:
                record(save_t[p], y, c, out[p])
                p += 1
            t = b
            continue
        if not (_all_finite(y) and _all_finite(K[ns])):
            stats[0] = nfev
            stats[1] = n_acc
            stats[2] = n_rej
            stats[3] = NONFINITE
            return t
        h_abs = _initial_step(
            t, y, K[ns], b, max_step, order, rtol, atol, c, lo, hi, scale, work, yt
        )
        nfev += 1
        while True:
            min_step = 10 * abs(np.nextafter(t, np.inf) - t)
            if h_abs > max_step:
                h_abs = max_step
            elif h_abs < min_step:
                h_abs = min_step
            accepted = False
            rejected = False
            err_finite = True
            while not accepted:
                if h_abs < min_step:
                    stats[0] = nfev
                    stats[1] = n_acc
                    stats[2] = n_rej
                    stats[3] = TOO_SMALL_STEP if err_finite else NONFINITE
                    return t
                h = h_abs
                t_new = t + h
                if t_new - b > 0:
                    t_new = b
                h = t_new - t
                h_abs = abs(h)
                # rk_step: K[0] = f; stages; y_new; f_new into K[ns]
                for i in range(n):
                    K[0, i] = K[ns, i]
                for s in range(1, ns):
                    for i in range(n):
                        acc = 0.0
                        for j in range(s):
                            acc += K[j, i] * A[s, j]
                        yt[i] = y[i] + acc * h
                    _eval(t + C[s] * h, lo, hi, yt, c, K[s])
                for i in range(n):
                    acc = 0.0
                    for j in range(ns):
                        acc += K[j, i] * B[j]
                    y_new[i] = y[i] + h * acc
                # K[ns] still holds f(t, y) only through K[0]; overwrite it with f_new
                _eval(t + h, lo, hi, y_new, c, K[ns])
                nfev += ns
                for i in range(n):
                    acc = 0.0
                    for j in range(ns + 1):
                        acc += K[j, i] * E[j]
                    sc = atol + _npmax(abs(y[i]), abs(y_new[i])) * rtol
                    work[i] = (acc * h) / sc
                error_norm = _rms(work)
                err_finite = math.isfinite(error_norm)
                if error_norm < 1:
                    if error_norm == 0:
                        factor = _MAX_FACTOR
                    else:
                        factor = _pymin(_MAX_FACTOR, _SAFETY * error_norm**err_exp)
                    if rejected:
                        factor = _pymin(1.0, factor)
                    h_abs *= factor
                    accepted = True
                else:
                    h_abs *= _pymax(_MIN_FACTOR, _SAFETY * error_norm**err_exp)
                    rejected = True
                    n_rej += 1
                    # the rejected step overwrote K[ns]; restore f(t, y) from K[0]
                    for i in range(n):
                        K[ns, i] = K[0, i]
            n_acc += 1
            # dense output for the save times this step covers: (t, t_new], and a itself
            have_q = False
            while p < q and save_t[p] <= t_new:
                _interpolate(save_t[p], t, t_new, y, K, P, Q, have_q, yt)
                have_q = True
                record(save_t[p], yt, c, out[p])
                p += 1
            for i in range(n):
                y[i] = y_new[i]
            t = t_new
            if t - b >= 0:
                break
    # save times at or past t1: the end state exactly, not an interpolant
    while p < n_save:
        record(save_t[p], y, c, out[p])
        p += 1
    stats[0] = nfev
    stats[1] = n_acc
    stats[2] = n_rej
    stats[3] = OK
    return t


@_jit
def rk45(c, y0, edges, save_t, rtol, atol, max_step, out, stats):
    """solve_ivp(method="RK45", rtol, atol, max_step, dense_output=True) once per segment
    [edges[i], edges[i+1]] (sorted, t0 .. t1), each from the previous end state.  Row i
    of ``out`` records save_t[i] (sorted ascending).  ``stats`` (int64, >= 4) receives
    nfev, accepted steps, rejected steps, status (OK / TOO_SMALL_STEP / NONFINITE).
    Returns the time reached (t1 unless the status says otherwise)."""
    return _rk_adaptive(
        c,
        y0,
        edges,
        save_t,
        rtol,
        atol,
        max_step,
        out,
        stats,
        _RK45_A,
        _RK45_B,
        _RK45_C,
        _RK45_E,
        _RK45_P,
        4,
    )


@_jit
def rk23(c, y0, edges, save_t, rtol, atol, max_step, out, stats):
    """As :func:`rk45`, with SciPy's RK23 (Bogacki-Shampine)."""
    return _rk_adaptive(
        c,
        y0,
        edges,
        save_t,
        rtol,
        atol,
        max_step,
        out,
        stats,
        _RK23_A,
        _RK23_B,
        _RK23_C,
        _RK23_E,
        _RK23_P,
        2,
    )


@_jit
def _n_members(C, Y0, OUT, STATUS, sel):
    # arrays that do not fit (Numba checks no bounds): run no member, the caller gets -1
    n = C.shape[0]
    if Y0.shape[0] != n or OUT.shape[0] != n or STATUS.shape[0] != n:
        return 0
    if OUT.shape[2] != sel.shape[0]:
        return 0
    for j in range(sel.shape[0]):
        if sel[j] < 0 or sel[j] >= N_OUT:
            return 0
    return n


# Many members, each its own single run (its own step control), in parallel, keeping only
# the output columns `sel` (flywheel_sd.engine.ensemble). They return 0, or -1 (nothing
# run) when the arrays do not fit.
@_pjit
def init_members(C, Y0, STATUS):
    for m in prange(C.shape[0]):
        setup(C[m])
        init(C[m], Y0[m])


@_pjit
def fixed_members(C, Y0, t0, dt, save, n_saved, sel, OUT, STATUS, rk4_method):
    """STATUS[m] = euler (or rk4) of member m; OUT[m] (n_saved, len(sel)) its columns."""
    n = _n_members(C, Y0, OUT, STATUS, sel) if OUT.shape[1] == n_saved else 0
    for m in prange(n):
        scratch = np.empty((n_saved, N_OUT))
        scratch[:] = np.nan
        if rk4_method:
            STATUS[m] = rk4(C[m], Y0[m], t0, dt, save, scratch)
        else:
            STATUS[m] = euler(C[m], Y0[m], t0, dt, save, scratch)
        for i in range(n_saved):
            for j in range(sel.shape[0]):
                OUT[m, i, j] = scratch[i, sel[j]]
    return 0 if n == C.shape[0] else -1


@_pjit
def adaptive_members(C, Y0, edges, save_t, rtol, atol, max_step, sel, OUT, STATS, rk23_method):
    """Member m's rk45 (or rk23) run, with its own step-size control; STATS (n, >= 4)."""
    n = _n_members(C, Y0, OUT, STATS, sel) if OUT.shape[1] == save_t.shape[0] else 0
    for m in prange(n):
        scratch = np.empty((save_t.shape[0], N_OUT))
        scratch[:] = np.nan
        if rk23_method:
            rk23(C[m], Y0[m], edges, save_t, rtol, atol, max_step, scratch, STATS[m])
        else:
            rk45(C[m], Y0[m], edges, save_t, rtol, atol, max_step, scratch, STATS[m])
        for i in range(save_t.shape[0]):
            for j in range(sel.shape[0]):
                OUT[m, i, j] = scratch[i, sel[j]]
    return 0 if n == C.shape[0] else -1


# <<< driver source ends
