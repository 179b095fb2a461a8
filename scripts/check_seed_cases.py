"""Print the seed-case signatures of the model, for tuning it.

Runs the built-in scenarios of ``flywheel_sd.scenarios`` and prints, for each seed case of
the design brief (section 3), the numbers its signature rests on, with PASS/FAIL against
the thresholds that ``tests/test_seed_cases.py`` asserts. Also reports the baseline's
shape (inflection, plateau, trust, cash) and the launch case's two fates.

Usage::

    python scripts/check_seed_cases.py [--method euler|RK45] [--jobs N] [SCENARIO ...]

``--method euler`` (the default here) is several times faster than the adaptive solver
and agrees with it to well within the margins of these checks.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flywheel_sd as fw

SCENARIOS = ["baseline", "wish_deposit", "ezbuy_stagnation", "ezbuy_early_transformation",
             "ezbuy_late_transformation", "amazon_prime", "ebay_qualification",
             "penalty_overreach", "market_mismatch", "competitor_entry"]
COLUMNS = ["Active Buyers", "Members", "Total Active Sellers", "Low Quality Seller Share",
           "Buyer Trust", "Platform Cash", "GMV", "Seller Entry", "Platform Choice Share",
           "Conversion Rate", "Ad Spend", "Average Buyer Churn Fraction", "Effective Selection"]


def _run(args):
    name, method, params = args
    return fw.run_scenario(name, method=method, params=params, return_columns=COLUMNS)


def win(s, a, b):
    return s[(s.index >= a) & (s.index < b)]


def report(res: dict, line) -> None:
    b = res.get("baseline")
    if b is None:
        return
    ab = b["Active Buyers"]
    cash = b["Platform Cash"]
    low = cash[cash.index <= 48].idxmin()
    positive = cash[(cash.index > low) & (cash > 0)]
    print(f"baseline: inflection month {ab.diff().idxmax():.0f}, growth over the last 12 months "
          f"{ab[120] / ab[108] - 1:.2%} (buyers) "
          f"{b['Total Active Sellers'][120] / b['Total Active Sellers'][108] - 1:.2%} "
          f"(sellers), trust at 120 {b['Buyer Trust'][120]:.3f}, cash lowest "
          f"{cash.min():.3g} at month {low:.0f}, positive from month "
          f"{positive.index[0] if len(positive) else 'never'}")
    if "wish_deposit" in res:
        w = res["wish_deposit"]
        ratio = win(w["Seller Entry"], 61, 74) / win(b["Seller Entry"], 61, 74)
        line("wish: entry <= 0.5 x baseline in months 61-73", (ratio <= 0.5).all(),
             f"max ratio {ratio.max():.3f}")
        r = w["Total Active Sellers"][74] / b["Total Active Sellers"][74]
        line("wish: sellers at 74 below baseline", r < 1, f"{r:.3f}")
        line("wish: low-quality share at 74 lower",
             w["Low Quality Seller Share"][74] < b["Low Quality Seller Share"][74],
             f"{w['Low Quality Seller Share'][74]:.3f} vs {b['Low Quality Seller Share'][74]:.3f}")
        diff = win(w["Buyer Trust"] - b["Buyer Trust"], 60, 121)
        line("wish: trust >= baseline - 0.001 from 60", diff.min() >= -1e-3,
             f"min {diff.min():+.4f}, max {diff.max():+.4f}")
        r = w["Seller Entry"][80] / b["Seller Entry"][80]
        line("wish: entry at 80 >= 0.8 x baseline", r >= 0.8, f"{r:.3f}")
        for v in ("Active Buyers", "GMV"):
            r = w[v][120] / b[v][120]
            line(f"wish: {v} at 120 below baseline", r < 1, f"{r:.4f}")
    if "ezbuy_stagnation" in res:
        z = res["ezbuy_stagnation"]
        g = z["GMV"]
        line("ezbuy: GMV peaks, ends <= 0.8 x peak", 0 < g.idxmax() < 120 and g[120] <= 0.8 * g.max(),
             f"peak month {g.idxmax():.0f}, end/peak {g[120] / g.max():.3f}")
        a = z["Active Buyers"]
        line("ezbuy: buyers at 120 <= 0.7 x peak", a[120] <= 0.7 * a.max(), f"{a[120] / a.max():.3f}")
        r = win(z["Ad Spend"], 48, 121).sum() / win(b["Ad Spend"], 48, 121).sum()
        line("ezbuy: ad spend 48-120 < 0.9 x baseline", r < 0.9, f"{r:.3f}")
        if {"ezbuy_early_transformation", "ezbuy_late_transformation"} <= set(res):
            e = res["ezbuy_early_transformation"]["Active Buyers"]
            la = res["ezbuy_late_transformation"]["Active Buyers"]
            line("ezbuy: early switch > late and > none", e[120] > la[120] and e[120] > a[120],
                 f"early {e[120]:.3g}, late {la[120]:.3g}, none {a[120]:.3g}")
            line("ezbuy: late switch <= 0.7 x its peak", la[120] <= 0.7 * la.max(),
                 f"{la[120] / la.max():.3f}")
    if "amazon_prime" in res:
        p = res["amazon_prime"]
        line("prime: members grow", p["Members"][120] > 5 * max(p["Members"][24], 1),
             f"{p['Members'][120]:.3g}")
        line("prime: churn falls",
             p["Average Buyer Churn Fraction"][120] < b["Average Buyer Churn Fraction"][120],
             f"{p['Average Buyer Churn Fraction'][120]:.4f} vs "
             f"{b['Average Buyer Churn Fraction'][120]:.4f}")
        for v in ("Active Buyers", "Total Active Sellers", "GMV", "Platform Cash"):
            r = p[v][120] / b[v][120]
            line(f"prime: {v} above baseline", r > 1, f"{r:.4f}")
    if "ebay_qualification" in res:
        e = res["ebay_qualification"]
        r = win(e["Total Active Sellers"] / b["Total Active Sellers"], 60, 72)
        line("ebay: sellers dip < 0.98 within a year", (r < 0.98).any(), f"min {r.min():.3f}")
        line("ebay: trust higher", e["Buyer Trust"][120] > b["Buyer Trust"][120],
             f"{e['Buyer Trust'][120]:.3f} vs {b['Buyer Trust'][120]:.3f}")
        line("ebay: low-quality share lower",
             e["Low Quality Seller Share"][120] < b["Low Quality Seller Share"][120],
             f"{e['Low Quality Seller Share'][120]:.3f} vs {b['Low Quality Seller Share'][120]:.3f}")
        r = e["GMV"][120] / b["GMV"][120]
        line("ebay: GMV ratio in [0.7, 1.01]", 0.7 <= r <= 1.01, f"{r:.3f}")
    if "penalty_overreach" in res:
        p = res["penalty_overreach"]
        for v, most in (("Total Active Sellers", 0.8), ("Effective Selection", 0.9),
                        ("Active Buyers", 0.95)):
            r = p[v][120] / b[v][120]
            line(f"penalty: {v} <= {most} x baseline", r <= most, f"{r:.3f}")
    if "market_mismatch" in res:
        m = res["market_mismatch"]
        r = m["Conversion Rate"].max() / b["Conversion Rate"].max()
        line("mismatch: peak conversion < 0.5 x baseline", r < 0.5, f"{r:.3f}")
        r = m["Active Buyers"].max() / b["Active Buyers"].max()
        line("mismatch: peak buyers < 0.2 x baseline", r < 0.2, f"{r:.3f}")
    if "competitor_entry" in res:
        c = res["competitor_entry"]
        r = c["Platform Choice Share"][120] / b["Platform Choice Share"][120]
        line("competitor: share < 0.9 x baseline", r < 0.9, f"{r:.3f}")
        r = c["Active Buyers"][120] / b["Active Buyers"][120]
        line("competitor: buyers below baseline", r < 1, f"{r:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=SCENARIOS)
    parser.add_argument("--method", default="euler")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--launch", type=float, nargs="*", default=[0, 1e5, 3e5, 1e6],
                        help="ad budgets to run the launch_ad_burn case at")
    args = parser.parse_args(argv)
    names = list(dict.fromkeys(["baseline", *args.scenarios]))
    jobs = [(n, args.method, None) for n in names]
    jobs += [("launch_ad_burn", args.method, {"Ad Budget": a}) for a in args.launch]
    with ProcessPoolExecutor(args.jobs) as pool:
        frames = list(pool.map(_run, jobs))
    res = dict(zip(names, frames[:len(names)]))
    failures = []

    def line(label, ok, info=""):
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {info}")
        if not ok:
            failures.append(label)

    report(res, line)
    stop = fw.scenarios.get("launch_ad_burn").params["Ad Stop Time"]
    for budget, frame in zip(args.launch, frames[len(names):]):
        buyers = frame["Active Buyers"]
        fate = "keeps growing" if buyers[120] > buyers[stop] else "decays"
        print(f"launch: Ad Budget {budget:>9,.0f}: buyers {buyers[stop]:>12,.0f} when the ads "
              f"stop, {buyers[120]:>12,.0f} at 120 -> {fate}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
