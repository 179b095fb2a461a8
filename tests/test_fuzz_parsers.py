"""Fuzzing every parser of user text (issue 12): for every input, a valid result or a
`FlywheelError` whose message is one line; never any other exception.

The parsers: the command line's ``--set NAME=VALUE[@START[:END]]``, ``--param
NAME[=LOW:HIGH[:N]]`` and number options (`flywheel_sd.cli._options`), scenario TOML files,
as raw text and bytes and as structured documents with random keys, types and values
(`flywheel_sd.scenarios`), and design specs (`flywheel_sd.designs`). Strategies mix
arbitrary text with inputs close to valid syntax (real names, numbers written every way
Python's float() reads or refuses), so that the fuzzer reaches past the first check:
parsed settings are made into scenarios and validated against a small model with a
deposit lever and its window constants, and their run inputs built.

The fast tests run a few hundred examples each; the ``slow`` variants many more.
"""

from __future__ import annotations

import atexit
import functools
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tomli_w
from conformance_mdl import vensim
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from flywheel_sd import designs, scenarios
from flywheel_sd.cli._options import number, param_range, positive_int, positive_number, setting
from flywheel_sd.errors import FlywheelError
from flywheel_sd.scenarios import Policy, Scenario

FAST, SLOW = 200, 3000

LEVERS = (
    "Seller Deposit",
    "Deposit Start Time",
    "Deposit End Time",
    "Ad Budget",
    "Ad Stop Time",
    "Growth Rate",
)
TINY = vensim(
    "Active Buyers = INTEG(Buyer Growth, 10) ~ Buyer [0,?] ~ Stock.",
    "Buyer Growth = Growth Rate * Active Buyers * (1 - Active Buyers / 1000)"
    " + Ad Budget * Ad Active / 10 - Effective Deposit / 100 ~ Buyer/Month ~ Growth.",
    "Growth Rate = 0.2 ~ 1/Month [0, 1] ~ Fractional growth rate.",
    "Ad Budget = 100 ~ USD/Month [0, 1000] ~ Advertising.",
    "Ad Stop Time = 1000 ~ Month [0, 1000] ~ When ads stop.",
    "Ad Active = 1 - STEP(1, Ad Stop Time) ~ Dmnl ~ Ads on.",
    "Seller Deposit = 0 ~ USD [0, 5000] ~ A deposit.",
    "Deposit Start Time = 0 ~ Month [0, 1000] ~ When the deposit starts.",
    "Deposit End Time = 1000 ~ Month [0, 1000] ~ When it ends.",
    "Effective Deposit = Seller Deposit * (STEP(1, Deposit Start Time)"
    " - STEP(1, Deposit End Time)) ~ USD ~ The deposit asked now.",
    final_time=20,
    time_step=0.25,
    control_limits=True,
)


@functools.cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="flywheel-fuzz-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def tiny_path() -> Path:
    path = workdir() / "tiny.mdl"
    path.write_text(TINY)
    return path


@functools.cache
def tiny():
    import flywheel_sd as fw

    return fw.load(tiny_path())


def one_line(err: BaseException, where: str = "") -> None:
    """`err` is the project's error, with a message of one line."""
    if currently_in_test_context():
        event(f"{where} refused: {type(err).__name__}")
    assert isinstance(err, FlywheelError), f"{type(err).__name__}: {err}"
    text = str(err)
    assert text.strip(), "empty message"
    assert "\n" not in text and len(text.splitlines()) == 1, repr(text)


def fuzz(strategy: st.SearchStrategy, name: str) -> Callable:
    """Register `check` as a fast test and an exhaustive one (more examples) over `strategy`."""

    def register(check: Callable[[Any], None]) -> Callable[[Any], None]:
        slow = (pytest.mark.slow, pytest.mark.exhaustive)
        for suffix, examples, marks in (("", FAST, ()), ("_slow", SLOW, slow)):
            test = settings(
                max_examples=examples,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )(given(strategy)(check))
            for mark in marks:
                test = mark(test)
            test.__name__ = f"test_{name}{suffix}"
            globals()[test.__name__] = test
        return check

    return register


# -- pieces of text close to valid syntax ----------------------------------------------------
NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e4, max_value=1e4).map(lambda x: f"{x:g}"),
    st.integers(-(10**6), 10**6).map(str),
    st.integers().map(str),
    st.sampled_from(
        [
            "",
            " ",
            "inf",
            "-inf",
            "nan",
            "NaN",
            "1e309",
            "-1e309",
            "1_000",
            "0x10",
            "\uff11\uff12",  # fullwidth digits: float() reads them
            "\u0663",  # Arabic-Indic three
            "1" * 5000,
            "1e-400",
            "+0",
            "-0",
            ".5",
            "5.",
            "1e",
            "--1",
            "1 2",
            "\t7\n",
            "\x00",
        ]
    ),
    st.text(max_size=6),
)
NAME_TEXT = st.one_of(
    st.sampled_from(LEVERS),
    st.sampled_from([n.lower() for n in LEVERS] + ["seller_deposit", "SAVEPER", "TIME STEP"]),
    st.text(alphabet=st.characters(blacklist_characters="=@:"), max_size=12),
    st.text(max_size=12),
)


@st.composite
def setting_text(draw) -> str:
    text = draw(NAME_TEXT) + draw(st.sampled_from(["=", "=", " = ", "", "=="])) + draw(NUMBER_TEXT)
    if draw(st.booleans()):
        text += draw(st.sampled_from(["@", "@", " @ ", "@@"])) + draw(NUMBER_TEXT)
        if draw(st.booleans()):
            text += draw(st.sampled_from([":", ":", "::"])) + draw(NUMBER_TEXT)
    return text


PLAIN_NUMBER = st.one_of(
    st.integers(-10, 1100).map(str),
    st.floats(min_value=-10, max_value=1100, allow_nan=False).map(lambda x: f"{x:.6g}"),
)


@st.composite
def near_valid_setting(draw) -> str:
    """A lever of the small model and numbers: mostly valid, often out of range or with a
    window that ends before it starts or after the run."""
    text = f"{draw(st.sampled_from(LEVERS))}={draw(PLAIN_NUMBER)}"
    if draw(st.booleans()):
        text += f"@{draw(PLAIN_NUMBER)}"
        if draw(st.integers(0, 3)):
            text += f":{draw(PLAIN_NUMBER)}"
    return text


@st.composite
def param_text(draw) -> str:
    text = draw(NAME_TEXT)
    if draw(st.integers(0, 4)):
        text += "=" + ":".join(draw(st.lists(NUMBER_TEXT, min_size=0, max_size=4)))
    return text


# -- the command line ------------------------------------------------------------------------
@fuzz(st.one_of(st.text(), setting_text(), near_valid_setting()), "set_option")
def check_set_option(text: str) -> None:
    """--set: a (name, finite number or Policy), or one line; a parsed policy goes on
    through a scenario's checks and run inputs on a model with a deposit window."""
    try:
        name, value = setting(text)
    except Exception as err:  # noqa: BLE001 - the property under test
        one_line(err, "parse")
        return
    assert isinstance(name, str) and name.strip() == name and name
    if isinstance(value, Policy):
        assert math.isfinite(value.value) and math.isfinite(value.start)
        assert value.end > value.start
    else:
        assert isinstance(value, float) and math.isfinite(value)
    model = tiny()
    sc = Scenario("fuzz", params={name: value}, model=str(tiny_path()))
    try:
        sc.validate(model)
        params, breaks = sc.inputs(model, 0.0, 20.0)
    except Exception as err:  # noqa: BLE001
        one_line(err, "validate")
        return
    event(f"run inputs built ({type(value).__name__})")
    assert all(0 < t < 20 for t in breaks)
    if isinstance(value, Policy) and model.real_name(name) == "Seller Deposit":
        # the window is the model's own: the deposit constants, not a series
        assert params["Seller Deposit"] == value.value
        start, end = params["Deposit Start Time"], params["Deposit End Time"]
        assert start == max(value.start, 0.0) if value.start <= 20 else start > 20
        assert end == max(value.end, 0.0) if value.end <= 20 else end > 20


@fuzz(st.one_of(st.text(), param_text()), "param_option")
def check_param_option(text: str) -> None:
    try:
        spec = param_range(text)
    except Exception as err:  # noqa: BLE001
        one_line(err)
        return
    assert spec.name and spec.name == spec.name.strip()
    if spec.low is not None:
        assert spec.high is not None and math.isfinite(spec.low) and math.isfinite(spec.high)
        assert spec.low < spec.high
    if spec.levels is not None:
        assert spec.levels >= 2


@fuzz(st.one_of(st.text(), NUMBER_TEXT), "number_options")
def check_number_options(text: str) -> None:
    for parse in (number, positive_number, positive_int):
        try:
            value = parse(text)
        except Exception as err:  # noqa: BLE001
            one_line(err)
            continue
        assert math.isfinite(value)
        if parse is not number:
            assert value > 0


def test_option_errors_are_usage_errors_on_the_command_line(capsys):
    """argparse shows the types' messages as they are: one line, exit 2."""
    from flywheel_sd.cli import main

    for argv in (
        ["run", "--set", "Take Rate=1@5:3"],
        ["run", "--set", "Take Rate=x"],
        ["sweep", "--param", "Take Rate=1:0", "--store", "x.nc"],
        ["sweep", "--param", "Take Rate=0:1:1", "--store", "x.nc"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("flywheel: error: "), err
        assert argv[2] in err[0], err


# -- scenario files --------------------------------------------------------------------------
def load_text(data: str | bytes, validate: bool = True):
    path = workdir() / "fuzz.toml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    return scenarios.load_file(path, validate=validate)


def check_scenario(sc) -> None:
    assert isinstance(sc, Scenario) and isinstance(sc.name, str)
    for key, value in sc.params.items():
        assert isinstance(key, str)
        if isinstance(value, Policy):
            assert math.isfinite(value.value) and value.end > value.start
        elif isinstance(value, pd.Series):
            assert np.all(np.isfinite(value.index.to_numpy(float)))
            assert np.all(np.isfinite(value.to_numpy(float)))
        elif isinstance(value, tuple):  # a list: one value per subscript element
            assert value and all(isinstance(v, float) and math.isfinite(v) for v in value)
        else:
            assert isinstance(value, float) and math.isfinite(value)
    for label, start, end in sc.events:
        assert isinstance(label, str) and math.isfinite(start) and end > start


TOML_LINES = st.sampled_from(
    [
        'name = "fuzz"',
        'description = "d"',
        "[params]",
        '"Seller Deposit" = 2000',
        '"Seller Deposit" = { value = 2000, start = 5, end = 9 }',
        '"Deposit End Time" = 3',
        '"Ad Budget" = { time = [0, 5], value = [1, 2] }',
        "[[events]]",
        "start = 1",
        "end = 0",
        'label = "x"',
        'extends = "fuzz"',
        'extends = "wish_deposit"',
        "replaces_builtin = true",
        "model = 5",
        "[" * 600 + "]" * 600,
        "x = " + "[" * 400 + "]" * 400,
        "x = " + "{a = " * 300 + "1" + "}" * 300,
    ]
)


@st.composite
def toml_text(draw) -> str:
    lines = draw(st.lists(st.one_of(TOML_LINES, st.text(max_size=30)), max_size=8))
    model = f"model = {str(tiny_path())!r}"
    return "\n".join([model, *lines]) if draw(st.booleans()) else "\n".join(lines)


@fuzz(st.one_of(st.text(), toml_text(), st.binary()), "scenario_text")
def check_scenario_text(data: str | bytes) -> None:
    """Raw text, text close to a scenario file, and bytes (not UTF-8, NUL...)."""
    for validate in (False, True):
        try:
            sc = load_text(data, validate)
        except Exception as err:  # noqa: BLE001
            one_line(err)
            continue
        check_scenario(sc)


def toml_values(leaves: st.SearchStrategy | None = None) -> st.SearchStrategy:
    leaves = leaves or st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.booleans(),
        st.text(max_size=8),
        st.datetimes(),
        st.dates(),
        st.times(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=8), inner, max_size=4),
        ),
        max_leaves=6,
    )


NUMBERS = st.one_of(
    st.integers(-1000, 1000), st.floats(), st.booleans(), st.text(max_size=3), st.dates()
)
PARAM_VALUES = st.one_of(
    NUMBERS,
    st.fixed_dictionaries(
        {"value": NUMBERS, "start": NUMBERS}, optional={"end": NUMBERS, "x": NUMBERS}
    ),
    st.fixed_dictionaries({"time": st.lists(NUMBERS, max_size=4), "value": st.lists(NUMBERS)}),
    st.fixed_dictionaries({"time": toml_values(), "value": toml_values()}),
    toml_values(),
)
EVENT = st.one_of(
    st.fixed_dictionaries(
        {"start": NUMBERS}, optional={"end": NUMBERS, "label": st.one_of(st.text(), NUMBERS)}
    ),
    toml_values(),
)


@st.composite
def scenario_doc(draw) -> dict:
    doc: dict[str, Any] = {}
    keys = draw(
        st.lists(
            st.sampled_from((*scenarios._scenario.TOP_LEVEL_KEYS, "other")),
            unique=True,
            max_size=7,
        )
    )
    for key in keys:
        if key == "name":
            doc[key] = draw(st.one_of(st.text(max_size=10), toml_values()))
        elif key == "model":
            doc[key] = draw(
                st.one_of(
                    st.just(str(tiny_path())),
                    st.text(max_size=10),
                    st.just("no/such/model.mdl"),
                    st.just("tiny\x00.mdl"),
                    toml_values(),
                )
            )
        elif key == "params":
            doc[key] = draw(
                st.one_of(
                    st.dictionaries(st.one_of(st.sampled_from(LEVERS), st.text()), PARAM_VALUES),
                    toml_values(),
                )
            )
        elif key == "events":
            doc[key] = draw(st.one_of(st.lists(EVENT, max_size=3), toml_values()))
        elif key == "extends":
            doc[key] = draw(st.one_of(st.sampled_from(["wish_deposit", "nope"]), toml_values()))
        else:
            doc[key] = draw(toml_values())
    if "model" not in doc and draw(st.integers(0, 9)):  # mostly on the small model
        doc["model"] = str(tiny_path())
    return doc


FINITE = st.one_of(st.integers(-5, 1100), st.floats(-5, 1100))


@st.composite
def near_valid_doc(draw) -> dict:
    """A scenario of the small model: levers with numbers, policies and series, events."""
    params: dict[str, Any] = {}
    for lever in draw(st.lists(st.sampled_from(LEVERS), unique=True, max_size=4)):
        kind = draw(st.integers(0, 2))
        if kind == 0:
            params[lever] = draw(FINITE)
        elif kind == 1:
            start = draw(FINITE)
            policy = {"value": draw(FINITE), "start": start}
            if draw(st.booleans()):
                policy["end"] = start + draw(st.floats(-1, 30))
            params[lever] = policy
        else:
            times = sorted(draw(st.lists(FINITE, min_size=1, max_size=4)))
            params[lever] = {"time": times, "value": [draw(FINITE) for _ in times]}
    doc: dict[str, Any] = {"name": "fuzz", "model": str(tiny_path()), "params": params}
    if draw(st.booleans()):
        start = draw(FINITE)
        doc["events"] = [{"label": "e", "start": start, "end": start + draw(st.floats(-1, 30))}]
    if draw(st.integers(0, 4)) == 0:
        doc["extends"] = "wish_deposit"
    return doc


def validations(doc: dict) -> tuple[bool, ...]:
    """Read without checks, and with checks against the model when the file names one (the
    default model takes seconds to translate in a fresh cache, so it is left out)."""
    return (False, True) if "model" in doc else (False,)


@fuzz(st.one_of(scenario_doc(), near_valid_doc()), "scenario_document")
def check_scenario_document(doc: dict) -> None:
    """Structured TOML: every top-level key, with values of every TOML type."""
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # not TOML (tomli_w refuses it): not an input
        return
    for validate in validations(doc):
        try:
            sc = load_text(text, validate)
        except Exception as err:  # noqa: BLE001
            one_line(err, f"validate={validate}")
            continue
        event(f"read (validate={validate})")
        check_scenario(sc)
        if validate:
            try:
                sc.inputs(tiny(), 0.0, 20.0)
            except Exception as err:  # noqa: BLE001
                one_line(err)


@fuzz(scenario_doc(), "scenario_from_dict")
def check_scenario_from_dict(doc: dict) -> None:
    """`from_dict` on parsed data, as the Python API takes it."""
    try:
        sc = scenarios.from_dict(doc, source="fuzz.toml")
    except Exception as err:  # noqa: BLE001
        one_line(err)
        return
    check_scenario(sc)


# -- design specs ----------------------------------------------------------------------------
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
BOUND = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(-100, 100),
    st.floats(),
    st.integers(),
    st.text(max_size=3),
    st.none(),
)
RANGE = st.one_of(
    st.none(),
    st.tuples(BOUND, BOUND),
    st.tuples(BOUND),
    st.tuples(BOUND, BOUND, BOUND),
    st.lists(BOUND, max_size=4),
    ANYTHING,
)
NAMES = st.one_of(st.sampled_from(LEVERS), st.text(max_size=6), st.integers(0, 3))
PARAMS = st.one_of(
    st.dictionaries(NAMES, RANGE, max_size=3),
    st.lists(NAMES, max_size=3),
    st.sampled_from(LEVERS),
    ANYTHING,
)
SIZES = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([1, 2, 4, 8, 16, 32, 64]),
    st.integers(min_value=10**9),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
SEEDS = st.one_of(st.none(), st.integers(-5, 2**70), st.floats(), st.text(max_size=3))


@st.composite
def design_call(draw) -> tuple[str, tuple, dict]:
    kind = draw(st.sampled_from(["grid", "lhs", "sobol", "morris", "saltelli", "oat", "table"]))
    params = draw(PARAMS)
    options: dict[str, Any] = {}
    # names without ranges read the model's; never the default model (slow to translate)
    options["model"] = draw(st.sampled_from([tiny_path(), tiny_path(), "no/such.mdl"]))
    if kind == "grid":
        levels = st.one_of(SIZES, st.dictionaries(NAMES, SIZES, max_size=3))
        return kind, (params, draw(levels)), options
    if kind == "oat":
        base = st.one_of(st.none(), st.dictionaries(NAMES, BOUND, max_size=3), ANYTHING)
        return kind, (params,), {**options, "base": draw(base)}
    if kind == "table":
        table = st.one_of(
            st.dictionaries(NAMES, st.lists(BOUND, max_size=4), max_size=3),
            st.dictionaries(NAMES, BOUND, max_size=3),
            ANYTHING,
        )
        return kind, (draw(table),), {}
    options["seed"] = draw(SEEDS)
    if kind == "morris" and draw(st.booleans()):
        options["num_levels"] = draw(SIZES)
    if kind == "saltelli" and draw(st.booleans()):
        options["calc_second_order"] = draw(ANYTHING)
    return kind, (params, draw(SIZES)), options


@st.composite
def near_valid_design(draw) -> tuple[str, tuple, dict]:
    """Levers of the small model with ranges inside (or near) their documented ones, or
    names alone, and sizes each design takes."""
    kind = draw(st.sampled_from(["grid", "lhs", "sobol", "morris", "saltelli", "oat", "table"]))
    names = draw(st.lists(st.sampled_from(LEVERS), unique=True, min_size=1, max_size=3))
    if draw(st.booleans()):
        params: Any = names
    else:
        params = {}
        for name in names:
            low, high = sorted(draw(st.lists(FINITE, min_size=2, max_size=2)))
            params[name] = (low, high)
    options: dict[str, Any] = {"model": tiny_path()}
    if kind == "table":
        rows = draw(st.integers(1, 5))
        return (
            kind,
            ({n: draw(st.lists(FINITE, min_size=rows, max_size=rows)) for n in names},),
            {},
        )
    if kind == "oat":
        return kind, (params,), {**options, "base": {n: draw(FINITE) for n in names}}
    if kind == "grid":
        return kind, (params, draw(st.integers(1, 6))), options
    size = draw(
        st.sampled_from([1, 2, 4, 8, 16]) if kind in ("sobol", "saltelli") else st.integers(1, 20)
    )
    options["seed"] = draw(st.one_of(st.none(), st.integers(0, 2**40)))
    return kind, (params, size), options


FUNCTIONS = {
    "grid": designs.grid,
    "lhs": designs.lhs,
    "sobol": designs.sobol,
    "morris": designs.morris,
    "saltelli": designs.saltelli,
    "oat": designs.oat,
    "table": designs.from_table,
}


@fuzz(st.one_of(design_call(), near_valid_design()), "designs")
def check_designs(call: tuple[str, tuple, dict]) -> None:
    kind, args, options = call
    try:
        design = FUNCTIONS[kind](*args, **options)
    except Exception as err:  # noqa: BLE001
        one_line(err, kind)
        return
    event(f"{kind} built")
    values = design.values
    assert values.ndim == 2 and values.shape[0] >= 1 and values.shape[1] >= 1
    assert np.all(np.isfinite(values))
    assert set(design.bounds) == set(design.names)
    design.describe()


# -- what the fuzzer found, kept as plain regression tests ------------------------------------
def _doc(doc: dict) -> Callable[[], Any]:
    return lambda: load_text(tomli_w.dumps(doc))


FOUND = {
    # read_toml: UnicodeDecodeError, RecursionError
    "not UTF-8": lambda: load_text(b"\x80"),
    "nested past the parser's depth": lambda: load_text("x = " + "[" * 3000 + "]" * 3000),
    # from_dict / _load: TypeError on a wrong type
    "events not a list": lambda: scenarios.from_dict({"name": "", "events": 0}),
    "extends not a string": _doc({"extends": 0}),
    "extends a list": _doc({"events": [], "extends": []}),
    # from_dict: ValueError (embedded null byte) from Path.resolve
    "model path with a NUL": lambda: scenarios.from_dict(
        {"name": "", "model": "tiny\x00.mdl"}, source="fuzz.toml"
    ),
    # validate: a policy on a window constant beside the lever's policy compared a series
    # with a number (ValueError: truth value of a Series is ambiguous)
    "two policies on one window": lambda: _doc(
        {
            "name": "fuzz",
            "model": str(tiny_path()),
            "params": {
                "Deposit Start Time": {"value": 0, "start": 0},
                "Seller Deposit": {"value": 0, "start": 0},
            },
        }
    )(),
    # designs: TypeError on params that are not names, MemoryError on a huge design
    "design params None": lambda: designs.lhs(None, None),
    "grid params None": lambda: designs.grid(None, 0),
    "a design too large to allocate": lambda: designs.lhs(
        "Seller Deposit", 25_996_594_063_805_852, model=tiny_path()
    ),
    # designs: StopIteration when a name is given twice (found by the slow variant)
    "a parameter given twice": lambda: designs.grid(
        ["Seller Deposit", "Seller Deposit"], 1, model=tiny_path()
    ),
}


@pytest.mark.parametrize("case", list(FOUND))
def test_found_by_the_fuzzer(case):
    with pytest.raises(FlywheelError) as info:
        FOUND[case]()
    one_line(info.value)
