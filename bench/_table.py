"""Plain-text and markdown tables of the static reports (bench.static_report, static_fused,
static_memops, static_cuda): one renderer, so every part prints alike."""
from __future__ import annotations

from typing import Sequence


def render(cols: Sequence[str], lines: Sequence[Sequence[object]], markdown: bool = False) -> str:
    """The table of ``lines`` (one sequence of cells per row) under the header ``cols``: markdown
    (``| a | b |`` rows after a ``|---|`` rule), or columns padded to their widest cell."""
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(str(v) for v in ln) + " |" for ln in lines]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *lines)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*cols)] + [fmt.format(*(str(v) for v in ln)) for ln in lines])
