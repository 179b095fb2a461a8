"""Write small Vensim models for the tests: equations plus the control section."""

from __future__ import annotations

#: The comments Vensim writes on the control variables of a new model.
_CONTROL_COMMENTS = {
    "INITIAL TIME": "The initial time for the simulation.",
    "FINAL TIME": "The final time for the simulation.",
    "TIME STEP": "The time step for the simulation.",
    "SAVEPER": "The frequency with which output is stored.",
}


def vensim(
    *equations: str,
    initial_time: float = 0,
    final_time: float = 20,
    time_step: float = 0.125,
    saveper: float | str = 1,
    time_units: str = "Month",
    control_limits: bool = False,
    control_comments: bool = False,
) -> str:
    """The text of a ``.mdl`` file with `equations` and the four control variables.

    An equation is ``"name = expression"`` or any Vensim definition (a subscript range
    ``"region: north, south"``, a lookup), optionally followed by its units and comment:
    ``"Rate = 0.1 ~ 1/Month [0, 0.5] ~ A lever."`` (units may carry a range ``[lo, hi]``).
    One that ends with its own ``|`` is written as it is.

    The control variables are in `time_units`; `control_limits` gives TIME STEP and SAVEPER
    the range ``[0,?]`` and `control_comments` the comments Vensim writes, as in a model
    saved by Vensim."""
    blocks = ["{UTF-8}"]
    for equation in equations:
        if equation.rstrip().endswith("|"):  # written with its own units, comment and "|"
            blocks.append(equation.strip() + "\n")
            continue
        definition, units, comment = [*equation.split("~"), "", ""][:3]
        blocks.append(f"{definition.strip()}\n\t~\t{units.strip()}\n\t~\t{comment.strip()}\n\t|\n")
    for name, value in (
        ("INITIAL TIME", initial_time),
        ("FINAL TIME", final_time),
        ("TIME STEP", time_step),
        ("SAVEPER", saveper),
    ):
        limits = " [0,?]" if control_limits and name in ("TIME STEP", "SAVEPER") else ""
        comment = _CONTROL_COMMENTS[name] if control_comments else ""
        blocks.append(f"{name} = {value}\n\t~\t{time_units}{limits}\n\t~\t{comment}\n\t|\n")
    return "\n".join(blocks)
