"""Write small Vensim models for the engine tests: equations plus the control section."""

from __future__ import annotations


def vensim(*equations: str, initial_time: float = 0, final_time: float = 20,
           time_step: float = 0.125, saveper: float | str = 1) -> str:
    """The text of a ``.mdl`` file with `equations` (each ``"name = expression"``, or any
    Vensim definition such as a subscript range ``"region: north, south"``; one that has
    its own ``~ units ~ comment |`` is written as it is) and the four control variables."""
    blocks = ["{UTF-8}"]
    for equation in equations:
        if "~" in equation:  # written with its own units, comment and "|"
            blocks.append(equation.strip() + "\n")
        else:
            blocks.append(f"{equation.strip()}\n\t~\t\n\t~\t\n\t|\n")
    for name, value in (("INITIAL TIME", initial_time), ("FINAL TIME", final_time),
                        ("TIME STEP", time_step), ("SAVEPER", saveper)):
        blocks.append(f"{name} = {value}\n\t~\tMonth\n\t~\t\n\t|\n")
    return "\n".join(blocks)
