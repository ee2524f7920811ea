"""The README's code blocks, for CI and tests/test_readme.py.

    python3 .ci/readme.py ci 1      # the commands of the first ```bash ci``` block, one per line

A block is a fenced code block; its info string is the language followed by optional tags:
``ci`` (install/test commands that .ci/run runs in a fresh venv), ``gpu`` (needs a CUDA device;
skipped without one). ``text`` blocks are not code. Plain standard library: it runs before any
install.
"""
from __future__ import annotations

import os
import re
import sys
from typing import List, NamedTuple, Tuple

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
_FENCE = re.compile(r"^```(\S*)(.*)$")


class Block(NamedTuple):
    lang: str
    tags: Tuple[str, ...]
    code: str
    line: int          # 1-based line of the opening fence


def blocks(path: str = README) -> List[Block]:
    out: List[Block] = []
    with open(path) as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m and m.group(1):
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"{path}:{start + 1}: unclosed code block")
            out.append(Block(m.group(1), tuple(m.group(2).split()), "\n".join(body) + "\n", start + 1))
        elif lines[i].rstrip() == "```":
            raise ValueError(f"{path}:{i + 1}: a code block without a language (write ```text for plain text)")
        i += 1
    return out


def commands(block: Block) -> List[str]:
    """The shell commands of a block: its lines without comments and blank lines."""
    return [ln for ln in (raw.strip() for raw in block.code.splitlines()) if ln and not ln.startswith("#")]


def ci_blocks(path: str = README) -> List[Block]:
    return [b for b in blocks(path) if "ci" in b.tags]


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "ci":
        sys.exit("usage: python3 .ci/readme.py ci N")
    print("\n".join(commands(ci_blocks()[int(sys.argv[2]) - 1])))
