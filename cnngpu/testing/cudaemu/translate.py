"""Source-to-source preparation of CUDA C for the g++ emulation build (cudaemu.h does the rest).

Three rewrites, each keeping the line structure of the file (so compiler messages and the
``file:line`` sites in emulator errors point at the original source):

* ``asm [volatile] ("ptx" : outputs : inputs [: clobbers]);`` becomes a call of the runtime's PTX
  interpreter, ``::cudaemu::ptx_exec(&site, "ptx", "file:line", {operands})``, each operand passed
  by reference with its constraint letter and size (inputs bound to temporaries live until the end
  of the statement). Macros cannot do this: the operand lists are not expressions.
* ``[extern] __shared__ [__align__(n)] T a[..], b[..];`` inside a function becomes references into
  the block's emulated shared window (``::cudaemu::shared_var`` keyed by a function-local static,
  so every template instantiation has its own variable; ``dynamic_shared`` for ``extern``). The
  runtime thus knows every shared variable: it fills them with NaN before each block and checks the
  guard bytes after each. (Section attributes, the obvious alternative, are ignored by GCC on
  static variables of templates.)
* After the last line, every ``extern "C" __global__`` entry point is registered together with its
  ``__launch_bounds__`` so the launcher can check arguments against the C signature.
"""
from __future__ import annotations

import re
from typing import List, Tuple


class TranslateError(ValueError):
    """The source uses a construct the emulation does not support (message names file:line)."""


_IDENT = re.compile(r"[A-Za-z_]\w*")


def code_mask(src: str) -> List[bool]:
    """Per character: True where it is code (not a comment, string or character literal; preprocessor
    lines count as code)."""
    mask = [True] * len(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            mask[i:j] = [False] * (j - i)
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            mask[i:j] = [False] * (j - i)
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            mask[i:j] = [False] * (j - i)
            i = j
        else:
            i += 1
    return mask


def _line(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


def _match_paren(src: str, mask: List[bool], open_pos: int, fname: str) -> int:
    """Index of the parenthesis closing the one at ``open_pos``."""
    depth = 0
    for j in range(open_pos, len(src)):
        if not mask[j]:
            continue
        if src[j] == "(":
            depth += 1
        elif src[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    raise TranslateError(f"{fname}:{_line(src, open_pos)}: unbalanced parenthesis")


def _split_top(text: str, sep: str, scope_colons: bool = True) -> List[str]:
    """Split at ``sep`` outside parentheses/brackets/braces/strings; ':' never splits '::' unless
    ``scope_colons`` is False (the sections of an asm statement, where '::' at the top level is an
    empty operand list: C++ scope operators only occur inside the parenthesised expressions)."""
    mask = code_mask(text)
    out, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if mask[i]:
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            elif c == sep and depth == 0:
                if sep == ":" and scope_colons and (text.startswith("::", i) or (i > 0 and text[i - 1] == ":")):
                    i += 1
                    continue
                out.append(text[start:i])
                start = i + 1
        i += 1
    out.append(text[start:])
    return out


def _string_literals(text: str, where: str) -> str:
    """The adjacent string literals of an asm template, re-emitted as one C string literal body."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    rest = re.sub(r'"((?:[^"\\]|\\.)*)"', "", text).strip()
    if rest:
        raise TranslateError(f"{where}: asm template must be string literals, found {rest!r}")
    return "".join(parts)


def _asm_operands(text: str, out: bool, where: str) -> List[Tuple[str, str, str]]:
    """[(mode, letter, expr)] of one operand list."""
    ops: List[Tuple[str, str, str]] = []
    if not text.strip():
        return ops
    for op in _split_top(text, ","):
        m = re.fullmatch(r'\s*(?:\[\s*\w+\s*\]\s*)?"([^"]*)"\s*\((.*)\)\s*', op, re.S)
        if not m:
            raise TranslateError(f"{where}: cannot parse asm operand {op.strip()!r}")
        cons, expr = m.group(1).replace("&", ""), m.group(2)
        mode = "i"
        if cons[:1] in "=+":
            mode, cons = cons[0], cons[1:]
        if out and mode == "i":
            raise TranslateError(f"{where}: output operand {op.strip()!r} needs '=' or '+'")
        if not out and mode != "i":
            raise TranslateError(f"{where}: input operand {op.strip()!r} cannot be written")
        if len(cons) != 1 or cons not in "hrlfdn0123456789":
            raise TranslateError(f"{where}: asm constraint {cons!r} is not emulated (h r l f d n)")
        ops.append((mode, cons, expr))
    return ops


def _rewrite_asm(src: str, mask: List[bool], start: int, fname: str, counter: List[int]) -> Tuple[int, str]:
    """(end, replacement) for the asm statement whose keyword starts at ``start``."""
    where = f"{fname}:{_line(src, start)}"
    m = re.compile(r"(?:asm|__asm__|__asm)\s*((?:(?:volatile|__volatile__|inline)\s*)*)(goto\s*)?\(").match(src, start)
    if m is None:
        raise TranslateError(f"{where}: cannot parse asm statement")
    if m.group(2):
        raise TranslateError(f"{where}: asm goto is not emulated")
    open_pos = m.end() - 1
    close = _match_paren(src, mask, open_pos, fname)
    body = src[open_pos + 1:close]
    sections = _split_top(body, ":", scope_colons=False)
    text = _string_literals(sections[0], where)
    outs = _asm_operands(sections[1], True, where) if len(sections) > 1 else []
    ins = _asm_operands(sections[2], False, where) if len(sections) > 2 else []
    args = []
    for mode, cons, expr in outs:
        args.append(f"::cudaemu::ptx_out('{mode}', '{cons}', {expr.strip()})")
    for mode, cons, expr in ins:
        if cons.isdigit():  # matching constraint: same register class as that output
            k = int(cons)
            if k >= len(outs):
                raise TranslateError(f"{where}: matching constraint {cons} names no output")
            cons = outs[k][1]
        args.append(f"::cudaemu::ptx_in('{cons}', {expr.strip()})")
    counter[0] += 1
    loc = f"{fname}:{_line(src, start)}"
    rep = (f"do {{ static ::cudaemu::PtxSite __cuemu_site{counter[0]}; "
           f"::cudaemu::ptx_exec(&__cuemu_site{counter[0]}, \"{text}\", \"{loc}\", {{{', '.join(args)}}}); }} while (0)")
    return close + 1, rep


def _brace_depth(src: str, mask: List[bool], pos: int) -> int:
    d = 0
    for j in range(pos):
        if mask[j]:
            if src[j] == "{":
                d += 1
            elif src[j] == "}":
                d -= 1
    return d


_DECL = re.compile(r"^(?P<type>.*?)(?P<ptr>[\s*&]*)\b(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\]\s*)*)$", re.S)


def _rewrite_shared(src: str, mask: List[bool], start: int, is_extern: bool, fname: str,
                    counter: List[int]) -> Tuple[int, str]:
    """(end, replacement) for the __shared__ declaration whose first token starts at ``start``."""
    where = f"{fname}:{_line(src, start)}"
    if _brace_depth(src, mask, start) == 0:
        raise TranslateError(f"{where}: __shared__ at namespace scope is not emulated (declare it inside the kernel)")
    kw = src.index("__shared__", start) + len("__shared__")
    end = kw
    depth = 0
    while end < len(src):
        if mask[end]:
            if src[end] in "([{":
                depth += 1
            elif src[end] in ")]}":
                depth -= 1
            elif src[end] == ";" and depth == 0:
                break
        end += 1
    decl = src[kw:end]
    align = None
    am = re.search(r"__align__\s*\(([^()]*)\)", decl)
    if am:
        align = am.group(1).strip()
        decl = decl[:am.start()] + decl[am.end():]
    decl = re.sub(r"\bstatic\b|\bvolatile\b", "", decl)
    if "=" in decl:
        raise TranslateError(f"{where}: __shared__ variables cannot have initializers")
    parts = _split_top(decl, ",")
    first = _DECL.match(parts[0].strip())
    if not first or not first.group("type").strip():
        raise TranslateError(f"{where}: cannot parse __shared__ declaration {decl.strip()!r}")
    base = first.group("type").strip()
    out = []
    for k, p in enumerate(parts):
        if k == 0:
            ptr, name, dims = first.group("ptr").strip(), first.group("name"), first.group("dims").strip()
        else:
            m = re.fullmatch(r"\s*([*&\s]*)([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)", p)
            if not m:
                raise TranslateError(f"{where}: cannot parse __shared__ declarator {p.strip()!r}")
            ptr, name, dims = m.group(1).strip(), m.group(2), m.group(3).strip()
        counter[0] += 1
        n = counter[0]
        t = f"__cuemu_t{n}"
        al = f"::cudaemu::max_align({align}, alignof({t}))" if align else f"alignof({t})"
        if is_extern:
            if not dims.startswith("[]"):
                raise TranslateError(f"{where}: extern __shared__ {name} must be an unsized array")
            rest = dims[2:].strip()
            al = f"::cudaemu::max_align({align}, alignof({t}))" if align else f"alignof({t})"
            out.append(f"typedef {base}{ptr} {t}{rest}; {t}* const {name} = reinterpret_cast<{t}*>("
                       f"::cudaemu::dynamic_shared({al}, \"{where}\"));")
        else:
            out.append(f"static char __cuemu_key{n}; typedef {base}{ptr} {t}{dims}; {t}& {name} = "
                       f"*reinterpret_cast<{t}*>(::cudaemu::shared_var(&__cuemu_key{n}, sizeof({t}), {al}, "
                       f"\"{name}\", \"{where}\"));")
    return end + 1, " ".join(out)


_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+(?:void\s+)?'
                    r'(?:__launch_bounds__\s*\((?P<lb>(?:[^()]|\([^()]*\))*)\)\s*)?(?:void\s+)?'
                    r'(?P<name>[A-Za-z_]\w*)\s*\(')


def entry_points(src: str) -> List[Tuple[str, str]]:
    """[(name, max-threads expression or '0')] of the extern "C" __global__ functions of ``src``."""
    mask = code_mask(src)
    out: List[Tuple[str, str]] = []
    for m in _ENTRY.finditer(src):
        if not mask[m.start()]:
            continue
        lb = m.group("lb")
        bound = _split_top(lb, ",")[0].strip() if lb else "0"
        if m.group("name") not in [n for n, _ in out]:
            out.append((m.group("name"), bound))
    return out


_KEYS = re.compile(r"\b(?:asm|__asm__|__asm|__shared__|extern\s+__shared__)\b")


def translate(src: str, fname: str) -> str:
    """The emulation build's version of one CUDA source or header (see the module docstring)."""
    mask = code_mask(src)
    out, pos = [], 0
    counter = [0]
    for m in _KEYS.finditer(src):
        s = m.start()
        if s < pos or not mask[s]:
            continue
        # skip preprocessor lines (e.g. a #define mentioning asm)
        line_start = src.rfind("\n", 0, s) + 1
        if src[line_start:s].lstrip().startswith("#"):
            continue
        tok = m.group(0)
        if tok.startswith("extern"):
            end, rep = _rewrite_shared(src, mask, s, True, fname, counter)
        elif tok == "__shared__":
            end, rep = _rewrite_shared(src, mask, s, False, fname, counter)
        else:
            end, rep = _rewrite_asm(src, mask, s, fname, counter)
        out.append(src[pos:s])
        out.append(rep + "\n" * src.count("\n", s, end))  # keep the line numbers of what follows
        pos = end
    out.append(src[pos:])
    text = "".join(out)
    regs = [f"static int __cuemu_reg_{name} = ::cudaemu::register_kernel(\"{name}\", &{name}, (int)({bound}));"
            for name, bound in entry_points(src)]
    if regs:
        text += "\n" + "\n".join(regs) + "\n"
    return f'#line 1 "{fname}"\n' + text
