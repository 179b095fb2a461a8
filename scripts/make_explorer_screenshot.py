"""Draw the README's picture of the what-if explorer: ``flywheel explore`` served on a free
localhost port, opened in headless Chromium (the system's /usr/bin/chromium and
chromedriver, driven by Selenium), screenshotted to docs/img/explorer.png.

Usage::

    python scripts/make_explorer_screenshot.py [--scenario wish_deposit] [--compare NAME]
        [--out PATH]

It picks the scenarios to overlay in the page's "Compare with" box (default:
ebay_qualification) and waits for the loop-dominance panel.

Needs the explore extra (Panel), selenium, and Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the browser helpers the browser test uses

import _browser as b  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="wish_deposit", help="scenario to show")
    parser.add_argument("--out", default=str(REPO / "docs" / "img" / "explorer.png"))
    parser.add_argument(
        "--compare", action="append", default=None, help="scenario to overlay (repeatable)"
    )
    parser.add_argument("--width", type=int, default=1660)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    reason = b.missing()
    if reason:
        print(f"cannot draw the screenshot: {reason}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        b.served(args.scenario, "--quiet", timeout=600) as url,
        b.chromium(args.width, args.height) as driver,
    ):
        driver.get(url)
        b.wait_for(lambda: b.plotted(driver), timeout=120)
        b.find(driver, "final_active_buyers")  # the metrics table is in
        for name in ["ebay_qualification"] if args.compare is None else args.compare:
            b.pick(driver, "Compare with", name)  # as a user picks it
            b.wait_for(lambda n=name: name_plotted(driver, n), timeout=60)
        b.find(driver, "loops analysed in", timeout=120)  # the loop panel is in
        # the Seller Deposit lever and its policy window in view in the lever column
        deposit = b.find(driver, "Seller Deposit (", "input")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", deposit)
        time.sleep(1.5)  # fonts and the last layout pass
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(out))
    print(f"wrote {out}")
    return 0


def name_plotted(driver, name: str) -> bool:
    """Whether the overlaid lines include scenario `name`."""
    return name in (b.compared(driver) or {}).get("name", [])


if __name__ == "__main__":
    sys.exit(main())
