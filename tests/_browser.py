"""Headless Chromium (the system's, never a downloaded one) driving the explorer served by
``flywheel explore``: shared by tests/test_explore.py and scripts/make_explorer_screenshot.py.

Panel renders its widgets inside shadow roots, so elements are found by a walk over the
whole tree (shadow roots included) in document order: the first element whose own text
starts with a label, then the first element after it that matches a CSS selector.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

#: The element after the first whose own text starts with arguments[0] that matches the
#: CSS selector arguments[1] (null if none).
FIND_JS = """
const [label, selector] = arguments;
const seen = [];
function walk(node) {
  if (node.nodeType === 1) {
    seen.push(node);
    if (node.shadowRoot) walk(node.shadowRoot);
  }
  for (const child of node.children || []) walk(child);
}
walk(document.documentElement);
let start = -1;
for (let i = 0; i < seen.length && start < 0; i++) {
  const own = Array.from(seen[i].childNodes)
    .filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
  if (own.startsWith(label)) start = i;
}
if (start < 0) return null;
for (let i = start; i < seen.length; i++) if (seen[i].matches(selector)) return seen[i];
return null;
"""

#: The plotted data: the explorer's ColumnDataSource (named "explorer-data"), as lists.
DATA_JS = """
for (const doc of (window.Bokeh && Bokeh.documents) || []) {
  const m = doc.get_model_by_name('explorer-data');
  if (m && m.data.time && m.data.time.length) {
    const out = {};
    for (const [k, v] of Object.entries(m.data)) out[k] = Array.from(v);
    return out;
  }
}
return null;
"""


#: The overlaid lines of the compared scenarios (the source named "explorer-compared").
COMPARED_JS = """
for (const doc of (window.Bokeh && Bokeh.documents) || []) {
  const m = doc.get_model_by_name('explorer-compared');
  if (m) {
    const out = {};
    const plain = (x) => (typeof x === 'string' || x.length === undefined ? x : Array.from(x));
    for (const [k, v] of Object.entries(m.data)) out[k] = Array.from(v, plain);
    return out;
  }
}
return null;
"""


def missing() -> str | None:
    """Why the browser test cannot run here (None: it can)."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install -y chromium chromium-driver)"
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} is absent (apt-get install -y chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(*args: str, env: dict | None = None, timeout: float = 180):
    """``flywheel explore ARGS --port N`` in a subprocess; yields its URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "flywheel_sd", "explore", *args, "--port", str(port)]
    url = f"http://localhost:{port}/"
    # the server's output goes to a file: an unread pipe that fills would stall it
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    out = log.read().decode(errors="replace")
                    raise RuntimeError(f"flywheel explore exited ({proc.returncode}): {out}")
                try:
                    # a slow first page must not time out and be asked for again: each
                    # request builds a session, and a pile of them slows the server more
                    with urllib.request.urlopen(url, timeout=120):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url} did not answer in {timeout:g} s") from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def chromium(width: int = 1600, height: int = 1100):
    """A headless Chromium session (the system browser and driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check, timeout: float = 60, every: float = 0.1):
    """The first truthy result of `check()`, retried until `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting after {timeout:g} s")
        time.sleep(every)


def find(driver, label: str, selector: str = "*", timeout: float = 30):
    return wait_for(lambda: driver.execute_script(FIND_JS, label, selector), timeout)


def plotted(driver) -> dict | None:
    return driver.execute_script(DATA_JS)


def settled(driver, old: list, pause: float = 1.0) -> dict | None:
    """The plotted data once it differs from `old` (a panel's current curve) and holds
    still for `pause` seconds (the last of several runs is in); else None."""
    first = plotted(driver)
    if not first or first["cur_1"] == old:
        return None
    time.sleep(pause)
    again = plotted(driver)
    return again if again == first else None


def compared(driver) -> dict | None:
    """The overlaid lines: ``name``, ``xs`` and ``ys_<panel>`` (a list per scenario)."""
    return driver.execute_script(COMPARED_JS)


def pick(driver, label: str, option: str) -> None:
    """Choose `option` in the multi-choice box labelled `label`, as a user does: open its
    list, click the option."""
    from selenium.webdriver.common.keys import Keys

    box = find(driver, label, "input.choices__input--cloned")
    click(driver, box)
    choice = find(driver, label, f'.choices__item--choice[data-value="{option}"]')
    click(driver, choice)
    box.send_keys(Keys.ESCAPE)  # close the list


def click(driver, element) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def type_into(driver, element, text: str) -> None:
    """Replace the text of an input and press Enter, as a user does."""
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    old = element.get_attribute("value") or ""
    element.send_keys(Keys.END, Keys.BACKSPACE * len(old), text, Keys.ENTER)


def open_sector(driver, sector: str) -> None:
    """Open the lever card of `sector` (its header is an h3 in the accordion)."""
    click(driver, find(driver, sector, "h3"))
