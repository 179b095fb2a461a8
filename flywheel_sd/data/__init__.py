"""Reference data shipped with the package: published series about the platforms the
scenarios mirror (Wish's revenue and users, Amazon's third-party share, Prime members,
eBay's GMV), for plausibility checks and calibration.

The data are one tidy CSV, ``reference_series.csv``, one row per figure; its sources are
cited in ``SOURCES.md`` beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources

import pandas as pd

from ..errors import ParameterError, unknown_name_message

__all__ = ["COLUMNS", "reference_data"]

FILE = "reference_series.csv"
#: The CSV's columns, in order.
COLUMNS = (
    "series",
    "period_start",
    "period_end",
    "value",
    "unit",
    "sampling",
    "note",
    "source",
)


def _read() -> pd.DataFrame:
    with resources.files(__name__).joinpath(FILE).open("r", encoding="utf-8") as f:
        frame = pd.read_csv(
            f, dtype={"note": str}, keep_default_na=False, na_values={"value": [""]}
        )
    frame["value"] = frame["value"].astype(float)
    for column in ("period_start", "period_end"):
        frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%d")
    return frame[list(COLUMNS)]


def reference_data(series: str | Iterable[str] | None = None) -> pd.DataFrame:
    """The reference figures as a DataFrame, one row per figure.

    Columns: ``series``, ``period_start`` and ``period_end`` (Timestamps; a point in time
    has start == end), ``value`` (float, in plain units: US dollars, counts, fractions),
    ``unit``, ``sampling`` (``annual``, ``quarter`` or ``point``), ``note`` (``lower
    bound: ...`` or ``approximate: ...``, else empty) and ``source`` (cited in
    ``flywheel_sd/data/SOURCES.md``).

    `series`: one series name or several (default: all), e.g. ``"wish_revenue"``. An
    unknown name raises ``ParameterError`` (a ``FlywheelError``) naming close matches.
    """
    frame = _read()
    if series is None:
        return frame
    wanted = [series] if isinstance(series, str) else list(series)
    known = list(dict.fromkeys(frame["series"]))
    for name in wanted:
        if name not in known:
            raise ParameterError(unknown_name_message("reference series", str(name), known))
    return frame[frame["series"].isin(wanted)].reset_index(drop=True)
