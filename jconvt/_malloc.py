"""Keeping XLA:CPU's scratch memory in glibc's heap (``tune_malloc``)."""

import ctypes
import ctypes.util
import functools

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# mallopt takes a C int.
_INT_MAX = 2 ** 31 - 1

DEFAULT_MMAP_THRESHOLD = 256 * 2 ** 20


@functools.cache
def _glibc():
  """The process's C library where it is glibc (it has ``mallopt`` and
  ``gnu_get_libc_version``), else None."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
  except OSError:
    return None
  if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):
    return None
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  libc.mallopt.restype = ctypes.c_int
  return libc


def _check_int(name: str, value, expected: str, unit: str) -> int:
  """``value``, a mallopt argument: an int (``expected`` names what the
  argument takes) of 1 to ``_INT_MAX`` ``unit``."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f"`{name}` must be {expected}, got {value!r} "
                    f"of type {type(value).__name__}")
  if not 0 < value <= _INT_MAX:
    raise ValueError(f"`{name}` must be between 1 and {_INT_MAX} {unit}, got {value}")
  return value


def _check_bytes(name: str, value) -> int:
  return _check_int(name, value, "an int (bytes)", "bytes (mallopt takes a C int)")


def tune_malloc(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
                trim_threshold: int | None = None, arena_max: int | None = 1) -> bool:
  """Makes glibc's malloc keep large freed blocks for reuse, for this process.

  XLA:CPU allocates a compiled program's temporary buffers afresh on every
  call. glibc serves blocks over its ``mmap_threshold`` (dynamic, at most
  32 MiB) with ``mmap`` and returns them to the kernel when freed, so a
  training step with more scratch than that takes all of it in again as
  page faults, 4 KiB at a time, on every call (TensorFlow's and PyTorch's
  allocators keep their memory). This calls ``mallopt(M_MMAP_THRESHOLD,
  mmap_threshold)`` and ``mallopt(M_TRIM_THRESHOLD, trim_threshold)``:
  blocks up to ``mmap_threshold`` come from the heap, whose top is given
  back only past ``trim_threshold`` of free memory. Measured on a 2-core
  EPYC, the suite's dcgan 32->64 training step (33 MiB of scratch) went
  from 46.7-48.9 ms to 36.2-36.7 ms, its faults from 33 MiB to none. With
  other processes busy on the same cores, a call now and then (1 to 3 in
  10, in a test) still faulted its whole scratch; the others none.

  It also calls ``mallopt(M_ARENA_MAX, arena_max)``. Threads other than
  the main one allocate from arenas of their own, heaps of at most 64 MiB,
  and glibc maps a larger block whatever ``mmap_threshold`` says. XLA runs
  a program from threads of its own: with a batch norm after the layer the
  suite's dcgan 32->64 step holds 65 MiB of scratch, and with the
  thresholds alone it still faulted 65 MiB a call (56-61 ms); with one
  arena, none (41-42 ms; unet k3s2 42-48 -> 27 ms). With ``arena_max=1``
  every thread allocates from the main heap, which has no such limit; its
  lock is shared, which costs programs that allocate from many threads at
  once. A thread keeps the arena it first allocated from, so call this
  before the first JAX computation.

  The settings are process-wide (every allocation, not only JAX's), last
  for the life of the process and turn off glibc's dynamic threshold; the
  process may hold up to ``trim_threshold`` of freed memory. They are the
  runtime equivalent of starting Python with ``GLIBC_TUNABLES=``
  ``glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...:glibc.malloc.arena_max=1``.
  Call it once, early; nothing in jconvt calls it for you.

  Args:
    mmap_threshold: bytes; larger blocks are still mapped and unmapped.
    trim_threshold: bytes; defaults to twice ``mmap_threshold``.
    arena_max: glibc's arena count; None leaves it as it is.

  Returns:
    True where glibc took every setting; False where the C library is not
    glibc (macOS, musl), and nothing changed.

  Raises:
    TypeError: a threshold or ``arena_max`` that is not an int.
    ValueError: a threshold outside 1 to 2**31 - 1 bytes, or an
      ``arena_max`` below 1.
  """
  _check_bytes("mmap_threshold", mmap_threshold)
  if trim_threshold is None:
    trim_threshold = min(2 * mmap_threshold, _INT_MAX)
  _check_bytes("trim_threshold", trim_threshold)
  if arena_max is not None:
    _check_int("arena_max", arena_max, "an int or None", "arenas")
  libc = _glibc()
  if libc is None:
    return False
  return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
              and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
              and (arena_max is None or libc.mallopt(_M_ARENA_MAX, arena_max)))
