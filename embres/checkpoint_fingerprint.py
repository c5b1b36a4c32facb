"""The fingerprint a checkpoint is saved with, and the comparison a restore makes.

**The fingerprint** is, per leaf of the state, its dtype, ``Σx`` and ``Σ|x|`` in float32, and
an exact checksum of its bits: the wrapping uint32 sum of a hash of (bit pattern, global
flat index) over the elements. Integer addition is associative, so the checksum is the same
for every mesh, sharding, process count and backend, and it changes whenever one element
changes (any one change is caught; several at once escape with probability 2^-32). The
float sums can only be compared up to rounding: see :data:`RTOL`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from embres.arrays import path_name

RTOL = 2.0**-10
"""Relative tolerance of the float32 sums, as a fraction of the leaf's ``Σ|x|``.

A float32 sum of ``n`` terms in any order (serial, pairwise, per-device partial sums then
an all-reduce) has an error made of one rounding per addition, each at most
``u = 2**-24`` of a partial sum no larger than ``Σ|x|``; treated as independent they add up
to about ``u·sqrt(n)·Σ|x|`` (Higham & Mary, 2019), and far less for the tree reductions XLA
uses (measured: below 1e-7·Σ|x| for 30,000 x 384 on every 8-device layout). Even a fully
serial sum of 2**24 elements stays near ``2**-12·Σ|x|`` on each side, four times below the
difference ``2**-10·Σ|x|`` allowed. The tolerance scales with ``Σ|x|``, not with ``|Σx|``:
a centred table has ``Σx`` near zero, and cancellation makes its float32 value differ from
mesh to mesh by far more than ``|Σx|`` itself. Being loose costs nothing, because the exact
checksum catches the small changes the sums cannot see; the sums catch gross damage (and
are the only check for fingerprints written before the checksum existed).
"""

TINY = 1e-30
"""Absolute slack of the float comparison, for all-zero leaves (``Σ|x| = 0``)."""


def _mix(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 that spreads every bit."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _bits(x: jax.Array) -> jax.Array | None:
    """Each element's bit pattern as uint32 (64-bit ones folded), or ``None`` if unsupported."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    try:
        if x.dtype.itemsize == 4:
            return lax.bitcast_convert_type(x, jnp.uint32)
        if x.dtype.itemsize == 2:
            return lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
        if x.dtype.itemsize == 1:
            return lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
        if x.dtype.itemsize == 8:
            words = lax.bitcast_convert_type(x, jnp.uint32)
            return words[..., 0] ^ _mix(words[..., 1] + np.uint32(0x7F4A7C15))
    except (TypeError, ValueError):  # sub-byte or complex types: no checksum
        pass
    return None


def _checksum(x: jax.Array) -> jax.Array | None:
    bits = _bits(x)
    if bits is None:
        return None
    index = jnp.zeros(x.shape, jnp.uint32)  # the global flat index, wrapping past 2**32
    stride = 1
    for axis in reversed(range(x.ndim)):
        step = np.uint32(stride % 2**32)
        index = index + lax.broadcasted_iota(jnp.uint32, x.shape, axis) * step
        stride *= x.shape[axis]
    # bits ^ (a function of the index) is a bijection of bits, and so is _mix: changing one
    # element always changes its term, hence the wrapping sum.
    terms = _mix(bits ^ _mix(index ^ np.uint32(0x9E3779B9)))
    return jnp.sum(terms, dtype=jnp.uint32)


@jax.jit
def _leaf_stats(leaves: list) -> list:
    out = []
    for x in leaves:
        x = jnp.asarray(x)
        f = x.astype(jnp.float32)
        out.append((jnp.stack([jnp.sum(f), jnp.sum(jnp.abs(f))]), _checksum(x)))
    return out


def _dtype_name(x: Any) -> str:
    return str(jax.dtypes.canonicalize_dtype(np.result_type(x)))


def fingerprint(tree: Any) -> list[dict]:
    """Per leaf: ``{"path", "dtype", "sum", "abs_sum", "checksum"}`` (see the module doc).

    Cheap (one pass, compiled once per state layout) and works on sharded arrays, across
    processes included: the results are replicated scalars.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    stats = _leaf_stats([leaf for _, leaf in flat])
    entries = []
    for (path, leaf), (sums, checksum) in zip(flat, stats, strict=True):
        total, abs_total = (float(v) for v in np.asarray(sums))
        entries.append(
            {
                "path": path_name(path),
                "dtype": _dtype_name(leaf),
                "sum": total,
                "abs_sum": abs_total,
                "checksum": None if checksum is None else int(np.asarray(checksum)),
            }
        )
    return entries


def _parts(entry: Any) -> dict:
    """A fingerprint entry as a dict; the older form was ``[sum, abs_sum]``."""
    if isinstance(entry, dict):
        return entry
    total, abs_total = entry
    return {"sum": total, "abs_sum": abs_total}


def _close(a: float, b: float, scale: float, rtol: float) -> bool:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return True
    return abs(a - b) <= rtol * scale + TINY  # False for inf or NaN on one side only


def fingerprint_problems(
    saved: list, restored: list, rtol: float = RTOL
) -> tuple[list[str], list[str]]:
    """Compares two fingerprints leaf by leaf: ``(mismatched, unverified)`` leaf names.

    A leaf is *mismatched* when both sides have the same dtype and their checksums differ,
    or ``|Σa − Σb|`` or ``|Σ|a| − Σ|b||`` exceeds ``rtol·max(Σ|a|, Σ|b|) + TINY``. It is
    *unverified* when the dtypes differ (Orbax casts on restore) or the fingerprints cannot
    be lined up (another number of leaves or other paths): a reason to warn, never proof.
    """
    if not isinstance(saved, list) or len(saved) != len(restored):
        n = len(saved) if isinstance(saved, list) else type(saved).__name__
        return [], [f"the saved fingerprint ({n} leaves) does not line up with the state"]
    mismatched, unverified = [], []
    for i, (a, b) in enumerate(zip(saved, restored, strict=True)):
        try:
            a, b = _parts(a), _parts(b)
            name = b.get("path") or a.get("path") or f"leaf {i}"
            if a.get("path") is not None and b.get("path") is not None:
                if a["path"] != b["path"]:
                    unverified.append(f"{name} (saved as {a['path']})")
                    continue
            if a.get("dtype") and b.get("dtype") and a["dtype"] != b["dtype"]:
                unverified.append(f"{name} (saved as {a['dtype']}, restored as {b['dtype']})")
                continue
            scale = max(abs(float(a["abs_sum"])), abs(float(b["abs_sum"])))
            if math.isnan(scale):
                scale = 0.0
            sums_ok = _close(float(a["sum"]), float(b["sum"]), scale, rtol) and _close(
                float(a["abs_sum"]), float(b["abs_sum"]), scale, rtol
            )
            checks = a.get("checksum"), b.get("checksum")
            bits_ok = None in checks or int(checks[0]) == int(checks[1])
        except (TypeError, ValueError, KeyError, AttributeError):
            unverified.append(f"leaf {i} (unreadable fingerprint entry)")
            continue
        if not (sums_ok and bits_ok):
            mismatched.append(name)
    return mismatched, unverified


def fingerprints_match(a: list, b: list, rtol: float = RTOL) -> bool:
    """Whether no leaf is mismatched (see :func:`fingerprint_problems`)."""
    return not fingerprint_problems(a, b, rtol)[0]
