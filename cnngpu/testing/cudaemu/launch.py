"""cupy.RawModule / RawKernel for the emulation: compile (build.py), load, check, launch.

Every launch checks each argument against the kernel's C signature (registered by the translated
source), stages every pointer argument in its own guarded buffer (overlapping arguments share
one), runs the blocks on the runtime's fibers in the current thread order, then checks the guard
bytes (a write past either end fails naming the kernel and the argument), checks that const
arguments were not written, and copies the results back.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections import Counter
from typing import Dict, List, Sequence

import numpy as np

from . import build as _build
from .memory import GUARD, GUARD_BYTE, guard_damage, ndarray

_ORDERS = ("forward", "reverse")
_state = {"order": os.environ.get("CNNGPU_CUDAEMU_ORDER", "forward")}
_lock = threading.RLock()
EXECUTED: Counter = Counter()   # launches per entry point name (coverage of the CUDA kernels)


class CudaEmuError(RuntimeError):
    """A fault the emulator detected in a kernel or its launch (message names kernel and cause)."""


class ArgumentError(CudaEmuError, TypeError):
    """A kernel argument does not match the C signature."""


class OutOfBoundsError(CudaEmuError):
    """A kernel wrote outside an argument's buffer (guard bytes damaged) or into a const argument."""


def order() -> str:
    """The current thread/block schedule: 'forward' or 'reverse'."""
    return _state["order"]


def set_order(o: str) -> None:
    if o not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {o!r}")
    _state["order"] = o


@contextlib.contextmanager
def schedule(o: str):
    """``with schedule('reverse'): ...`` runs the launches inside in reverse thread and block order."""
    old = order()
    set_order(o)
    try:
        yield
    finally:
        set_order(old)


class _Param(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("size", ctypes.c_int), ("is_signed", ctypes.c_int),
                ("pointee_kind", ctypes.c_int), ("pointee_size", ctypes.c_int), ("pointee_signed", ctypes.c_int),
                ("pointee_const", ctypes.c_int), ("type_name", ctypes.c_char_p)]


_libs: Dict[str, ctypes.CDLL] = {}


def _load(path: str) -> ctypes.CDLL:
    lib = _libs.get(path)
    if lib is None:
        lib = ctypes.CDLL(path)
        lib.cudaemu_kernel_name.restype = ctypes.c_char_p
        lib.cudaemu_kernel_params.restype = ctypes.POINTER(_Param)
        lib.cudaemu_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                       ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_void_p),
                                       ctypes.c_int,
                                       ctypes.c_char_p, ctypes.c_int]
        _libs[path] = lib
    return lib


class RawModule:
    """cupy.RawModule(code=..., options=(...)) compiled for the CPU emulation."""

    def __init__(self, code: str | None = None, *, path: str | None = None, options: Sequence[str] = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, name_expressions=None,
                 jitify: bool = False, name: str = "module.cu"):
        if code is None:
            if path is None:
                raise TypeError("RawModule needs code or path")
            with open(path) as f:
                code = f.read()
            name = os.path.basename(path)
        if name_expressions:
            raise NotImplementedError("cudaemu: name_expressions (C++-mangled kernels) are not emulated; "
                                      "use extern \"C\" entry points")
        self.code, self.options = code, tuple(options)
        self.path = _build.build(code, self.options, name)
        self.lib = _load(self.path)
        self.dyn_max: Dict[int, int] = {}   # kernel index -> max_dynamic_shared_size_bytes
        self._kernels = {self.lib.cudaemu_kernel_name(i).decode(): i for i in range(self.lib.cudaemu_num_kernels())}

    def get_function(self, name: str) -> "RawKernel":
        if name not in self._kernels:
            raise AttributeError(f"cudaemu: no extern \"C\" __global__ function {name!r} in this module "
                                 f"(it has: {', '.join(sorted(self._kernels))})")
        return RawKernel(_module=self, _index=self._kernels[name], name=name)


class RawKernel:
    """A kernel of a RawModule; ``kern(grid, block, args, shared_mem=0)`` as cupy.RawKernel.
    ``RawKernel(code, name, options)`` compiles a module of its own, as cupy's does."""

    _index: int

    def __init__(self, code: str | None = None, name: str = "", options: Sequence[str] = (), *,
                 _module: RawModule | None = None, _index: int | None = None, **kwargs):
        if _module is None:
            _module = RawModule(code=code, options=options, **kwargs)
            k = _module.get_function(name)
            _index = k._index
        if _index is None:
            raise TypeError("RawKernel: pass code and name, or a module and its kernel index")
        self.module, self._index, self.name = _module, _index, name
        lib = _module.lib
        n = lib.cudaemu_kernel_nparams(_index)
        p = lib.cudaemu_kernel_params(_index)
        self.params: List[_Param] = [p[i] for i in range(n)]
        self.max_threads = lib.cudaemu_kernel_max_threads(_index)

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        """cudaFuncAttributeMaxDynamicSharedMemorySize, as cupy's settable attribute: 0 (unset) keeps
        static + dynamic shared memory within 48 KiB; set, dynamic shared memory may reach it and
        static + it the 227 KiB of sm_90. Kept per module and kernel, like the CUDA function attribute."""
        return self.module.dyn_max.get(self._index, 0)

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, v: int) -> None:
        self.module.dyn_max[self._index] = int(v)

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(p.type_name.decode() for p in self.params)})"

    # ---- argument checks ---------------------------------------------------------------------
    def _value(self, i: int, p: _Param, a):
        tname = p.type_name.decode()
        where = f"kernel {self.name}: argument {i} ({tname})"
        if isinstance(a, (np.ndarray,)) and not isinstance(a, ndarray) and p.kind == 2:
            raise ArgumentError(f"{where} got a host numpy.ndarray; pass a device array")
        if p.kind == 2:
            if not isinstance(a, ndarray):
                raise ArgumentError(f"{where} needs a device array, got {type(a).__name__}")
            dt = a.dtype
            ok = {4: True,
                  0: dt.kind in "iu" and dt.itemsize == p.pointee_size and (dt.kind == "i") == bool(p.pointee_signed),
                  1: dt.kind == "f" and dt.itemsize == p.pointee_size,
                  3: dt.itemsize == p.pointee_size}.get(p.pointee_kind, False)
            if tname.replace("const", "").strip().startswith("bool"):
                ok = dt == np.bool_
            if not ok:
                raise ArgumentError(f"{where} got an array of {dt.name} (itemsize {dt.itemsize})")
            return None
        if p.kind == 0:
            if isinstance(a, (bool, np.bool_)):
                raise ArgumentError(f"{where} got a bool")
            if isinstance(a, int):
                a = np.int64(a)  # cupy passes a Python int as a 64-bit long
            if not isinstance(a, np.integer):
                raise ArgumentError(f"{where} needs a numpy integer scalar, got {type(a).__name__}")
            if a.dtype.itemsize != p.size or (a.dtype.kind == "i") != bool(p.is_signed):
                raise ArgumentError(f"{where} got {a.dtype.name} (a {p.size}-byte "
                                    f"{'signed' if p.is_signed else 'unsigned'} integer is needed)")
            return a.tobytes()
        if p.kind == 1:
            if isinstance(a, float):
                a = np.float64(a)  # cupy passes a Python float as a double
            if not isinstance(a, np.floating) or a.dtype.itemsize != p.size:
                raise ArgumentError(f"{where} got {getattr(a, 'dtype', type(a).__name__)} "
                                    f"(a {p.size}-byte float is needed)")
            return a.tobytes()
        if tname == "bool":
            if not isinstance(a, (bool, np.bool_)):
                raise ArgumentError(f"{where} needs a bool, got {type(a).__name__}")
            return np.bool_(a).tobytes()
        raise ArgumentError(f"{where}: passing this parameter type by value is not emulated")

    # ---- launch --------------------------------------------------------------------------------
    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None, enable_cooperative_groups=False):
        grid = _dims(grid, "grid", self.name)
        block = _dims(block, "block", self.name)
        args = tuple(args)
        if len(args) != len(self.params):
            raise ArgumentError(f"kernel {self.name} takes {len(self.params)} arguments, got {len(args)}: "
                                f"{self.signature}")
        values = [self._value(i, p, a) for i, (p, a) in enumerate(zip(self.params, args))]
        with _lock:
            stage = _Staging([(i, a) for i, a in enumerate(args) if values[i] is None], self)
            slots = (ctypes.c_uint64 * max(1, len(args)))()
            ptrs = (ctypes.c_void_p * max(1, len(args)))()
            for i, v in enumerate(values):
                if v is None:
                    slots[i] = stage.pointer(i)
                else:
                    ctypes.memmove(ctypes.byref(slots, 8 * i), v, len(v))
                ptrs[i] = ctypes.addressof(slots) + 8 * i
            err = ctypes.create_string_buffer(4096)
            flags = 1 if order() == "reverse" else 0
            try:
                rc = self.module.lib.cudaemu_launch(self._index, (ctypes.c_uint * 3)(*grid),
                                                    (ctypes.c_uint * 3)(*block), int(shared_mem),
                                                    self.max_dynamic_shared_size_bytes, ptrs, flags, err,
                                                    len(err))
                if rc:
                    raise CudaEmuError(err.value.decode(errors="replace"))
                stage.finish()
            finally:
                stage.free()
            EXECUTED[self.name] += 1


def _dims(v, what: str, name: str):
    t = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
    if not 1 <= len(t) <= 3 or not all(isinstance(x, (int, np.integer)) for x in t):
        raise ArgumentError(f"kernel {name}: {what} must be 1 to 3 ints, got {v!r}")
    return tuple(int(x) for x in t) + (1,) * (3 - len(t))


def _extent(a: np.ndarray):
    ptr = a.__array_interface__["data"][0]
    if a.size == 0:
        return ptr, ptr
    lo = ptr + sum(min(0, (s - 1) * st) for s, st in zip(a.shape, a.strides))
    hi = ptr + sum(max(0, (s - 1) * st) for s, st in zip(a.shape, a.strides)) + a.itemsize
    return lo, hi


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PAGE = os.sysconf("SC_PAGE_SIZE")
_FAR = 1 << 26          # PROT_NONE address space on each side of a staged buffer (64 MiB)
_PROT_NONE, _PROT_RW, _MAP_PRIVATE_ANON_NORESERVE = 0, 3, 0x02 | 0x20 | 0x4000


class _Mapped:
    """``n`` bytes at an address congruent to ``lo`` mod 256, GUARD+ bytes of 0xFF on both sides
    inside read/write pages, and 64 MiB of inaccessible address space beyond them (an access
    there faults and the runtime reports an illegal memory access instead of corrupting the heap)."""

    def __init__(self, n: int, lo: int):
        lead = GUARD + 256
        rw = (lead + n + GUARD + _PAGE - 1) // _PAGE * _PAGE
        self.size = 2 * _FAR + rw
        base = _libc.mmap(None, self.size, _PROT_NONE, _MAP_PRIVATE_ANON_NORESERVE, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise MemoryError("cudaemu: mmap of a staging buffer failed")
        self.base = base
        if _libc.mprotect(base + _FAR, rw, _PROT_RW):
            raise MemoryError("cudaemu: mprotect of a staging buffer failed")
        self.rw_lo, self.rw_hi = base + _FAR, base + _FAR + rw
        ctypes.memset(self.rw_lo, GUARD_BYTE, rw)
        self.data = self.rw_lo + GUARD + ((lo % 256) - (self.rw_lo + GUARD)) % 256
        self.n = n

    def head(self) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_uint8 * (self.data - self.rw_lo)).from_address(self.rw_lo))

    def tail(self) -> np.ndarray:
        k = self.rw_hi - self.data - self.n
        return np.ctypeslib.as_array((ctypes.c_uint8 * k).from_address(self.data + self.n))

    def body(self) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_uint8 * self.n).from_address(self.data))

    def free(self):
        if self.base:
            _libc.munmap(self.base, self.size)
            self.base = 0


class _Staging:
    """Guarded copies of the pointer arguments of one launch (overlapping arguments share one)."""

    def __init__(self, items, kern: RawKernel):
        self.kern = kern
        spans = sorted((*_extent(a), i, a) for i, a in items)
        self.groups: List[list] = []   # [lo, hi, [(i, a)], mapping]
        for lo, hi, i, a in spans:
            if self.groups and lo < self.groups[-1][1]:
                g = self.groups[-1]
                g[1] = max(g[1], hi)
                g[2].append((i, a))
            else:
                self.groups.append([lo, hi, [(i, a)], None])
        self.where = {}
        for g in self.groups:
            lo, hi = g[0], g[1]
            m = _Mapped(hi - lo, lo)
            g[3] = m
            if hi > lo:
                ctypes.memmove(m.data, lo, hi - lo)
            for i, a in g[2]:
                self.where[i] = m.data + (a.__array_interface__["data"][0] - lo)

    def free(self):
        for g in self.groups:
            g[3].free()

    def pointer(self, i: int) -> int:
        return self.where[i]

    def _names(self, g) -> str:
        return ", ".join(f"argument {i} ({self.kern.params[i].type_name.decode()}, {a.dtype.name}{list(a.shape)})"
                         for i, a in g[2])

    def finish(self) -> None:
        for g in self.groups:
            m = g[3]
            bad = np.flatnonzero(m.tail() != GUARD_BYTE)
            if bad.size:
                raise OutOfBoundsError(f"kernel {self.kern.name} wrote {bad[0]} bytes past the end of "
                                       f"{self._names(g)} (a {m.n}-byte buffer)")
            head = m.head()
            bad = np.flatnonzero(head != GUARD_BYTE)
            if bad.size:
                raise OutOfBoundsError(f"kernel {self.kern.name} wrote {head.size - bad[0]} bytes before the start "
                                       f"of {self._names(g)}")
        for g in self.groups:
            lo, hi, members, m = g
            n = hi - lo
            if not n:
                continue
            new = m.body()
            if all(self.kern.params[i].pointee_const for i, _ in members):
                old = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(lo))
                if not np.array_equal(old, new):
                    raise OutOfBoundsError(f"kernel {self.kern.name} wrote into const {self._names(g)}")
                continue
            ctypes.memmove(lo, m.data, n)
        for g in self.groups:
            for i, a in g[2]:
                dmg = guard_damage(a)
                if dmg:
                    raise OutOfBoundsError(f"kernel {self.kern.name}: the allocation of argument {i} has damaged "
                                           f"guard bytes ({dmg})")
