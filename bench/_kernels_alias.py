"""Make ``cnngpu.kernels`` importable when the package is run from a checkout without installing.

pyproject.toml maps the top-level folder ``kernels/`` to the package ``cnngpu.kernels``
(setuptools ``package-dir``); an install (editable or not) sets that mapping up. With only
``PYTHONPATH=<repo root>`` (e.g. on a GPU machine where ``pip install -e .`` is not possible),
``import cnngpu.kernels`` would fail. ``ensure()`` registers ``kernels/`` under that name, with
its ``__path__`` pointing at ``kernels/`` so ``cnngpu.kernels.triton.<module>`` imports normally.

It does nothing when ``cnngpu.kernels`` already imports (installed package). Importing this
module calls ``ensure()``, so ``python -m pytest -p bench._kernels_alias ...`` works as a plugin.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure() -> str:
    """Import ``cnngpu.kernels`` (aliasing ``<repo>/kernels`` if needed); return how it was found."""
    try:
        importlib.import_module("cnngpu.kernels")
        return "installed"
    except ModuleNotFoundError as e:
        if e.name not in ("cnngpu.kernels", "cnngpu"):
            raise
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import cnngpu  # noqa: F401  (the parent package must exist first)
    kdir = os.path.join(REPO_ROOT, "kernels")
    spec = importlib.util.spec_from_file_location(
        "cnngpu.kernels", os.path.join(kdir, "__init__.py"), submodule_search_locations=[kdir])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot alias {kdir} as cnngpu.kernels")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cnngpu.kernels"] = mod
    spec.loader.exec_module(mod)
    sys.modules["cnngpu"].kernels = mod
    return "aliased from " + kdir


ensure()
