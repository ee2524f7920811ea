"""Re-laid conv weights, made once per parameter version: the one cache both GPU backends use.

The implicit-GEMM kernels want their weight in another order than the (K, C/groups, R, S) users
pass: the triton backend a channels-last copy (zero-padded channels for the fp16/bf16 stem), the
cupy backend (K, R, S, C/groups) for the forward, (G, R, S, C/g, K/g) for dX and a C-contiguous
array for its direct kernels. A backend asks :func:`relaid` for a layout (a hashable name of its
own choosing) and passes the function that makes the copy; the copy is reused while the weight's
contents cannot have changed, i.e. while its *version* is the same.

Where the version comes from (:func:`version_of`):
- a **torch tensor** (triton backend): its own in-place version counter (``_version``), which every
  in-place torch op bumps (``w.add_()``, optimizers, ``load_state_dict``'s ``copy_``);
- a version **declared by the caller** for the duration of a call, :func:`versioned` (array,
  source, version): ``cnngpu.torch`` declares the torch parameter (and its ``_version``) that the
  array handed to the backend was made from (a detached tensor or a cupy DLPack view -- new
  objects on every call, so they cannot be the cache key themselves); ``cnngpu.nn`` declares its
  ``Parameter`` and ``Parameter.version``. For a torch tensor both count (source = the declared
  one, version = (declared, own)).
- anything else (a cupy array passed straight to ``cnngpu.functional``, a torch inference tensor,
  which has no counter): no version, so no caching -- the copy is made on every call.

Why the launcher asks instead of being handed pre-laid views: which layout a call needs depends on
choices made inside the launcher (direct or implicit GEMM, the sm_90 wgmma path, channel padding),
and the cupy dX layout (G, R, S, C/g, K/g) is no strided (K, C/g, R, S) view when groups > 1; so
the layout rules stay in the launchers (one function per layout) and the callers only say which
versions they know.

A copy made from more than the weight -- the eval-mode fused block's weight with BatchNorm
folded in, w * gamma / sqrt(running_var + eps) -- names those other arrays as ``inputs`` of
:func:`relaid`: each is versioned the same way (its own counter or a declared source), and the copy
is reused only while every one has the same source, version and signature too (none of them
without a version: not cached). The triton backend bumps the in-place version of running
statistics its kernels update (a kernel write is invisible to torch's counter).

Entries are keyed by (id(source), layout) and hold (weak reference to the source, version,
signature of the array: address, shape, strides, dtype, device; the copy; weak references to the
inputs' sources). A hit needs the same living source object -- a new tensor at a recycled address
and id does not hit -- the same version and the same signature, and the same of every input. A newer version replaces the entry, and an entry is dropped when
its source dies, so the cache holds at most one copy per (parameter, layout), at most MAX_ENTRIES
in all (least recently used dropped first); :func:`clear` empties it.

Not detected (the copy would be stale; call :func:`clear`, or ``Parameter.bump_version()`` in
cnngpu.nn): writes that bypass the version source -- on torch tensors writes through ``w.data``
(a separate version counter) or through another alias of the memory (numpy, cupy/DLPack views),
and ``w.data = other`` when ``other`` happens to reuse the old storage's address; in cnngpu.nn on
cupy arrays, element writes to ``p.data`` (``p.data[...] = v``) or in-place ops on another
reference to the array (``Parameter`` counts ``p.data = v`` and ``p.data -= v``: attribute
assignments; on triton, whose arrays are torch tensors, torch's own counter sees the rest too).
The declarations are process-wide, not per thread.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Iterator, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 512

# id(array) -> (array, source, version): the versions declared by callers (versioned); the array is
# held, so its id cannot be reused while declared
_DECLARED: Dict[int, Tuple[Any, Any, Hashable]] = {}
# (id(source), layout) -> (weakref to source, version, signature, copy, weakrefs to the inputs' sources)
_CACHE: "OrderedDict[Tuple[int, Hashable], Tuple[weakref.ref, Hashable, tuple, Any, tuple]]" = OrderedDict()


def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


@contextlib.contextmanager
def versioned(array: Any, source: Any, version: Hashable) -> Iterator[Any]:
    """Within this block, ``array``'s contents are those of ``source`` at ``version``: re-laid
    copies of it are cached under ``source`` (weakly referenced) and reused until ``version``
    changes. ``source`` must be weak-referenceable (a torch tensor, a cnngpu.nn Parameter); a None
    array declares nothing. Yields ``array``."""
    if array is None:
        yield array
        return
    key = id(array)
    prev = _DECLARED.get(key)
    _DECLARED[key] = (array, source, version)
    try:
        yield array
    finally:
        if prev is None:
            _DECLARED.pop(key, None)
        else:
            _DECLARED[key] = prev


def torch_version(t: Any) -> Optional[int]:
    """A torch tensor's in-place version counter, or None for an inference tensor (made under
    ``torch.inference_mode``: it has no counter, so copies of it are not cached)."""
    return None if t.is_inference() else int(t._version)


def version_of(array: Any) -> Optional[Tuple[Any, Hashable]]:
    """(source, version) that re-laid copies of ``array`` are cached under, or None (not cached):
    see the module docstring."""
    declared = _DECLARED.get(id(array))
    if declared is not None and declared[0] is not array:
        declared = None
    own = torch_version(array) if _is_torch(array) else None
    if declared is not None:
        return declared[1], (declared[2], own)
    if own is not None:
        return array, own
    return None


def signature(array: Any) -> tuple:
    """What must match besides the version: address, shape, strides, dtype and device."""
    if _is_torch(array):
        return (array.data_ptr(), tuple(array.shape), tuple(array.stride()), str(array.dtype), str(array.device))
    ptr = getattr(getattr(array, "data", None), "ptr", None)          # cupy: a MemoryPointer
    if ptr is None:
        ptr = array.__array_interface__["data"][0]                     # numpy
    dev = getattr(array, "device", None)
    return (int(ptr), tuple(array.shape), tuple(array.strides), str(array.dtype), getattr(dev, "id", None))


def _input_state(inputs: Sequence[Any]) -> Optional[Tuple[tuple, tuple]]:
    """(sources, (version, signature) per input) of :func:`relaid`'s ``inputs`` (None entries kept
    as None), or None when one of them has no version (then nothing is cached)."""
    sources: list = []
    states: list = []
    for a in inputs:
        if a is None:
            sources.append(None)
            states.append(None)
            continue
        vs = version_of(a)
        if vs is None:
            return None
        sources.append(vs[0])
        states.append((vs[1], signature(a)))
    return tuple(sources), tuple(states)


def relaid(array: Any, layout: Hashable, make: Callable[[], T], inputs: Sequence[Any] = ()) -> T:
    """``make()`` (a re-laid copy of ``array`` in ``layout``), made once per version of ``array``
    (:func:`version_of`); made on every call when ``array`` has no version. ``inputs``: the other
    arrays (or None) the copy is computed from; it is remade when one of them changes version or
    signature too, and made on every call when one of them has no version."""
    vs = version_of(array)
    ins = _input_state(inputs)
    if vs is None or ins is None:
        return make()
    source, version = vs
    in_sources, in_states = ins
    version = (version, in_states) if inputs else version
    key = (id(source), layout)
    sig = signature(array)
    hit = _CACHE.get(key)
    if (hit is not None and hit[0]() is source and hit[1] == version and hit[2] == sig
            and all((r is None and s is None) or (r is not None and r() is s) for r, s in zip(hit[4], in_sources))):
        _CACHE.move_to_end(key)
        return hit[3]
    out = make()
    try:
        ref = weakref.ref(source, functools.partial(_drop, key))
        in_refs = tuple(None if s is None else weakref.ref(s) for s in in_sources)
    except TypeError:           # not weak-referenceable: no caching
        return out
    _CACHE[key] = (ref, version, sig, out, in_refs)
    _CACHE.move_to_end(key)
    while len(_CACHE) > MAX_ENTRIES:
        _CACHE.popitem(last=False)
    return out


def _drop(key: Tuple[int, Hashable], ref: weakref.ref) -> None:
    """The source of ``key``'s entry died: free its copy (unless a new entry took the key)."""
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is ref:
        _CACHE.pop(key, None)


def clear() -> None:
    """Drop every cached copy (after writes the versions cannot see, see the module docstring)."""
    _CACHE.clear()


def cached_layouts(source: Any) -> Dict[Hashable, Any]:
    """{layout: copy} cached under ``source`` now (for tests and inspection)."""
    return {k[1]: v[3] for k, v in list(_CACHE.items()) if v[0]() is source}
