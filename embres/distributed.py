"""Devices and layouts: a mesh from the config, batch and parameter shardings, the pmap path.

The default path jits the one pure step over a ``Mesh`` with the batch sharded on the
``data`` axis and parameters placed by regex rules (replicated unless a rule says
otherwise). ``config.parallel="pmap"`` runs the *same* step under ``jax.pmap`` with its
``axis_name`` set, so the step averages gradients and metrics with ``lax.pmean``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from embres.arrays import path_name

ENV_VARS = ("EMBRES_COORDINATOR", "EMBRES_NUM_PROCESSES", "EMBRES_PROCESS_ID")
DATA_AXIS = "data"
PARALLEL_MODES = ("jit", "pmap")
_AXIS_ORDER = ("data", "model")


def initialize(multihost: bool | None = None) -> bool:
    """Starts JAX's multi-controller runtime (``jax.distributed``) when asked; call first.

    Must run before anything touches devices. With ``EMBRES_COORDINATOR`` (host:port),
    ``EMBRES_NUM_PROCESSES`` and ``EMBRES_PROCESS_ID`` set, those are passed to
    ``jax.distributed.initialize``; with ``multihost=True`` and none of them set, JAX's own
    cluster detection (SLURM, Cloud TPU VMs, ...) finds the coordinator. On CPU the
    collectives go over gloo.

    Args:
      multihost: True (``--multihost``): always initialise; None: only when the
        ``EMBRES_*`` variables are set; False: never.

    Returns:
      Whether ``jax.distributed`` was initialised.

    Raises:
      ValueError: when only some ``EMBRES_*`` variables are set (naming the missing ones),
        when one is malformed, or when ``--multihost`` finds no cluster to join.
    """
    env = {k: os.environ.get(k, "").strip() for k in ENV_VARS}
    given = [k for k in ENV_VARS if env[k]]
    if multihost is False or (multihost is None and not given):
        return False
    kwargs: dict[str, Any] = {}
    if given:
        missing = [k for k in ENV_VARS if not env[k]]
        if missing:
            raise ValueError(
                f"multi-host run: {', '.join(missing)} not set (set all of "
                f"EMBRES_COORDINATOR=host:port, EMBRES_NUM_PROCESSES=N, EMBRES_PROCESS_ID=i, "
                f"or none of them to let JAX detect SLURM / Cloud TPU)"
            )
        if ":" not in env["EMBRES_COORDINATOR"]:
            raise ValueError(
                f"EMBRES_COORDINATOR={env['EMBRES_COORDINATOR']!r}: expected host:port"
            )
        try:
            count, index = int(env["EMBRES_NUM_PROCESSES"]), int(env["EMBRES_PROCESS_ID"])
        except ValueError:
            raise ValueError(
                f"EMBRES_NUM_PROCESSES={env['EMBRES_NUM_PROCESSES']!r} and "
                f"EMBRES_PROCESS_ID={env['EMBRES_PROCESS_ID']!r} must be integers"
            ) from None
        if not 0 <= index < count:
            raise ValueError(f"EMBRES_PROCESS_ID={index} is not in [0, {count})")
        kwargs = {
            "coordinator_address": env["EMBRES_COORDINATOR"],
            "num_processes": count,
            "process_id": index,
        }
    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
    if not platforms or "cpu" in platforms:  # only configures the CPU client
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:
        if given:
            raise
        raise ValueError(
            f"--multihost: JAX found no cluster to join ({e}); outside SLURM / Cloud TPU set "
            f"{', '.join(ENV_VARS)}"
        ) from None
    return True


def mesh_axes(mesh_cfg: Mapping[str, int]) -> list[tuple[str, int]]:
    """(name, size) pairs, ``data`` first, then ``model``, then any others by name."""
    names = sorted(mesh_cfg, key=lambda n: (_AXIS_ORDER.index(n) if n in _AXIS_ORDER else 9, n))
    return [(n, int(mesh_cfg[n])) for n in names]


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh over ``devices`` (default: all) with axes sized by ``mesh_cfg``; -1 takes the rest.

    Raises:
      ValueError: when the sizes do not multiply to the device count, naming both.
    """
    devices = list(jax.devices() if devices is None else devices)
    axes = mesh_axes(mesh_cfg)
    if DATA_AXIS not in dict(axes):
        raise ValueError(f"config.mesh={dict(mesh_cfg)} has no {DATA_AXIS!r} axis; add data=-1")
    fixed = int(np.prod([s for _, s in axes if s != -1]))
    free = [n for n, s in axes if s == -1]
    if len(free) > 1 or any(s == 0 or s < -1 for _, s in axes):
        raise ValueError(f"config.mesh={dict(mesh_cfg)}: sizes must be positive, at most one -1")
    sizes = [len(devices) // fixed if s == -1 else s for _, s in axes]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"config.mesh={dict(mesh_cfg)} needs {int(np.prod(sizes))} devices; "
            f"{len(devices)} are available"
        )
    processes = len({getattr(d, "process_index", 0) for d in devices})
    data_size = sizes[[n for n, _ in axes].index(DATA_AXIS)]
    if data_size % processes:
        raise ValueError(
            f"config.mesh={dict(mesh_cfg)}: the data axis ({data_size}) must be a multiple of "
            f"the {processes} processes, since each process feeds its own rows of the batch; "
            "make config.mesh.data larger and config.mesh.model smaller"
        )
    names = tuple(n for n, _ in axes)
    # Auto axes: shardings are placed by the rules and jit, as on every JAX version we run.
    return jax.make_mesh(
        tuple(sizes), names, axis_types=(AxisType.Auto,) * len(names), devices=devices
    )


def select_devices(num_devices: int = -1, local: bool = False) -> list[Any]:
    """The devices a run uses: all (``-1``), or the first ``num_devices`` of one process.

    Raises:
      ValueError: when ``num_devices`` is out of range, or is set in a multi-process run
        (every process must take part; size the mesh instead).
    """
    devices = jax.local_devices() if local else jax.devices()
    if num_devices == -1:
        return devices
    if jax.process_count() > 1:
        raise ValueError(
            f"config.num_devices={num_devices} in a {jax.process_count()}-process run; "
            "keep it -1 (all devices) and choose the layout with config.mesh"
        )
    if not 0 < num_devices <= len(devices):
        raise ValueError(
            f"config.num_devices={num_devices}; expected -1 or 1..{len(devices)} "
            f"({len(devices)} devices are available)"
        )
    return devices[:num_devices]


def vocab_row_rules(vocab_rows: Sequence[str], table_path: str) -> tuple[tuple[str, tuple], ...]:
    """The default sharding rules: vocabulary rows over the ``model`` axis.

    ``vocab_rows`` are the adapter's top-level param keys with one row per token
    (``adapter.VOCAB_ROWS``: the low-rank ``A``, a static student's ``table``), matched in
    the params and in their optimizer moments; ``table_path`` is the teacher family's input
    table (``family.TABLE_PATH``), matched in the frozen teacher. Everything else is
    replicated, and with ``config.mesh.model=1`` so is everything.
    """
    rules = []
    if vocab_rows:
        names = "|".join(re.escape(k) for k in vocab_rows)
        rules.append((rf"^(params|opt_state)/(.*/)?({names})$", ("model", None)))
    rules.append((rf"^teacher/{re.escape(table_path)}$", ("model", None)))
    return tuple(rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def sharding_for(name: str, mesh: Mesh, rules: Sequence[tuple[str, Sequence]] = ()):
    """The sharding of the leaf called ``name`` ("a/b/c"): the first rule whose regex
    matches it (``re.search``), else replicated.

    Raises:
      ValueError: naming the rule when its spec uses an axis the mesh does not have.
    """
    for pattern, spec in rules:
        if re.search(pattern, name):
            unknown = [a for a in _spec_axes(spec) if a not in mesh.axis_names]
            if unknown:
                raise ValueError(
                    f"config.sharding_rules: rule ({pattern!r}, {tuple(spec)}) names mesh axes "
                    f"{unknown}, but config.mesh has {list(mesh.axis_names)}"
                )
            return NamedSharding(mesh, PartitionSpec(*spec))
    return NamedSharding(mesh, PartitionSpec())


def _spec_axes(spec: Sequence) -> list[str]:
    axes = []
    for entry in spec:
        if isinstance(entry, str):
            axes.append(entry)
        elif entry is not None:
            axes.extend(entry)
    return axes


def tree_shardings(
    tree: Any, mesh: Mesh, rules: Sequence[tuple[str, Sequence]] = (), check: bool = False
) -> Any:
    """Shardings for every leaf of ``tree``: the first regex in ``rules`` matching its path.

    Args:
      tree: a pytree of arrays or ``ShapeDtypeStruct`` (paths join dict keys with ``/``).
      mesh: the mesh the specs refer to.
      rules: ``(regex, spec)`` pairs, e.g. ``("params/A$", ("model", None))``; unmatched
        leaves are replicated.
      check: raise when a leaf's shape does not divide over the axes its rule names.

    Raises:
      ValueError: with ``check``, naming the leaf, its shape and the rule's spec.
    """

    def pick(path, leaf):
        name = path_name(path)
        sharding = sharding_for(name, mesh, rules)
        if check and hasattr(leaf, "shape"):
            for dim, entry in zip(leaf.shape, sharding.spec, strict=False):
                parts = int(np.prod([mesh.shape[a] for a in _spec_axes([entry])]))
                if dim % parts:
                    raise ValueError(
                        f"{name} of shape {tuple(leaf.shape)} cannot be sharded "
                        f"{sharding.spec} over mesh {dict(mesh.shape)}: {dim} rows do not "
                        f"divide into {parts}; set config.pad_vocab_to_multiple_of to a "
                        f"multiple of {parts} (vocabulary rows) or change config.sharding_rules"
                    )
        return sharding

    return jax.tree_util.tree_map_with_path(pick, tree)


def bytes_per_device(tree: Any) -> int:
    """The most bytes of ``tree``'s arrays that any one of this process's devices holds."""
    held: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return max(held.values(), default=0)


def put_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Host-local numpy rows -> global arrays sharded over ``data`` (multi-host safe)."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def jit_step(
    step: Callable,
    state_shardings: Any,
    batch_shard: NamedSharding,
    frozen_shardings: Any,
    donate: bool = True,
) -> Callable:
    """``jax.jit(step)`` with explicit layouts; the state argument is donated by default."""
    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_shard, frozen_shardings),
        out_shardings=(state_shardings, replicated(batch_shard.mesh)),
        donate_argnums=(0,) if donate else (),
    )


def pmap_step(step: Callable, donate: bool = True) -> Callable:
    """The same step under ``jax.pmap`` over local devices; ``step`` must take ``axis_name``.

    Inputs: the state and frozen tree replicated (``replicate``), the batch split
    (``split_batch``). Outputs keep the leading device axis (``unreplicate`` drops it).
    """
    import functools

    return jax.pmap(
        functools.partial(step, axis_name=DATA_AXIS),
        axis_name=DATA_AXIS,
        donate_argnums=(0,) if donate else (),
    )


def replicate(tree: Any, devices: Sequence[Any] | None = None) -> Any:
    """One copy of every leaf per local device (leading axis = device)."""
    devices = list(jax.local_devices() if devices is None else devices)
    # pmap runs on jit + shard_map in current JAX: a device-axis NamedSharding is its layout.
    sharding = NamedSharding(Mesh(np.asarray(devices), (DATA_AXIS,)), PartitionSpec(DATA_AXIS))

    def put(x):
        x = np.asarray(x)
        return jax.device_put(np.broadcast_to(x, (len(devices),) + x.shape), sharding)

    return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated tree."""
    return jax.tree.map(lambda x: x[0], tree)


def split_batch(batch: Mapping[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
    """[B, ...] -> [num_devices, B / num_devices, ...]; B must divide evenly."""
    out = {}
    for k, v in batch.items():
        if v.shape[0] % num_devices:
            raise ValueError(
                f"batch of {v.shape[0]} rows cannot be split over {num_devices} devices; "
                f"set config.batch_size to a multiple of {num_devices}"
            )
        out[k] = v.reshape((num_devices, v.shape[0] // num_devices) + v.shape[1:])
    return out


def keys_of(tree: Any) -> list[str]:
    """Flattened '/'-joined paths of a nested dict (for messages and tests)."""
    return ["/".join(k) for k in traverse_util.flatten_dict(tree)]
