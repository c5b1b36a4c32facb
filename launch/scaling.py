r"""Scaling study: one low-rank table step across device counts and mesh shapes.

    python launch/scaling.py                          # 1/2/4/8 fake CPU devices -> scaling.csv
    python launch/scaling.py --rows=262144 --dim=4096 --rank=256 --devices=8   # the big table

A synthetic ``rows x dim`` table (frozen, the teacher's) is fitted by ``A·B`` (rank ``rank``)
with AdamW on batches of row ids; the table and ``A`` are sharded on rows over ``model``,
the batch over ``data``, everything else replicated (the same ``config.mesh`` /
``config.sharding_rules`` machinery ``embres.train`` uses). Each device count runs in its
own subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` must be set before
JAX starts). Columns: devices, mesh, examples/s, step time, compile time, bytes per device
of params + optimizer state and of the table (measured from the arrays' shards), peak
memory (where the backend reports it; CPU does not).

On fake CPU devices all "devices" share the same cores: the numbers show that every layout
computes the same loss and how bytes per device fall with ``model``, not speed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAKE_CPU_NOTE = (
    "Fake CPU devices share this machine's cores: these rows show correctness (same loss "
    "on every layout) and memory scaling (bytes per device), not speed."
)
FIELDS = [
    "devices",
    "mesh",
    "examples_per_s",
    "step_time_s",
    "compile_time_s",
    "state_bytes_per_device",
    "table_bytes_per_device",
    "table_bytes_total",
    "peak_memory_bytes",
    "final_loss",
    "platform",
]


def meshes_for(n: int, layouts: str = "data,model,mixed") -> list[dict[str, int]]:
    """data-only, all-model, and data x model (model=2) where they differ."""
    want = set(layouts.split(","))
    out = [{"data": n, "model": 1}] if "data" in want else []
    if n >= 2 and "model" in want:
        out.append({"data": 1, "model": n})
    if n >= 4 and "mixed" in want:
        out.append({"data": n // 2, "model": 2})
    return out


def worker(args) -> dict:
    """Runs in a subprocess that already sees ``args.devices`` devices."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    sys.path.insert(0, str(REPO))
    from embres import distributed

    mesh_cfg = json.loads(args.mesh)
    devices = jax.devices()[: args.devices]
    mesh = distributed.make_mesh(mesh_cfg, devices)
    # The rules every shipped config gets by default (distributed.vocab_row_rules from the
    # adapter and the family): A (+ Adam moments) and the frozen table over "model".
    rules = (
        *distributed.vocab_row_rules(("A",), "word_embeddings/embedding"),
        (r"^table$", ("model", None)),
    )
    rows, dim, rank = args.rows, args.dim, args.rank
    tx = optax.adamw(1e-2)

    def init(key):
        ka, kb = jax.random.split(key)
        params = {
            "A": jax.random.normal(ka, (rows, rank)) / np.sqrt(rank),
            "B": jax.random.normal(kb, (rank, dim)) / np.sqrt(dim),
        }
        return {"params": params, "opt_state": tx.init(params)}

    frozen_abstract = {"table": jax.ShapeDtypeStruct((rows, dim), jnp.float32)}
    frozen_sh = distributed.tree_shardings(frozen_abstract, mesh, rules)
    table = jax.jit(
        lambda k: {"table": jax.random.normal(k, (rows, dim), jnp.float32)},
        out_shardings=frozen_sh,
    )(jax.random.PRNGKey(1))  # made shard by shard: never whole on one device
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    state_sh = distributed.tree_shardings(abstract, mesh, rules)
    state = jax.jit(init, out_shardings=state_sh)(jax.random.PRNGKey(0))
    batch_sh = distributed.batch_sharding(mesh)

    def step(state, batch, frozen):
        def loss_fn(params):
            ids = batch["ids"]
            pred = params["A"][ids] @ params["B"]
            return jnp.mean((pred - frozen["table"][ids]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state}, {"loss": loss}

    jitted = distributed.jit_step(step, state_sh, batch_sh, frozen_sh)
    rng = np.random.default_rng(0)
    batches = [
        {"ids": rng.integers(0, rows, (args.batch,), dtype=np.int32)} for _ in range(args.steps + 1)
    ]
    put = [distributed.put_batch(b, batch_sh) for b in batches]
    t0 = time.perf_counter()
    compiled = jitted.lower(state, put[0], table).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, put[0], table)  # warm-up step
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for b in put[1:]:
        state, metrics = compiled(state, b, table)
    jax.block_until_ready(state)
    step_s = (time.perf_counter() - t0) / args.steps

    stats = devices[0].memory_stats() or {}
    return {
        "devices": len(devices),
        "mesh": "x".join(f"{k}={v}" for k, v in distributed.mesh_axes(mesh_cfg)),
        "examples_per_s": round(args.batch / step_s, 1),
        "step_time_s": round(step_s, 5),
        "compile_time_s": round(compile_s, 3),
        "state_bytes_per_device": distributed.bytes_per_device(state),
        "table_bytes_per_device": distributed.bytes_per_device(table),
        "table_bytes_total": rows * dim * 4,
        "peak_memory_bytes": stats.get("peak_bytes_in_use", ""),
        "final_loss": float(metrics["loss"]),
        "platform": devices[0].platform,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="1,2,4,8", help="device counts, comma-separated")
    p.add_argument("--rows", type=int, default=32768)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--batch", type=int, default=256, help="global batch of row ids")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default="scaling.csv")
    p.add_argument(
        "--layouts",
        default="data,model,mixed",
        help="data (data=n), model (model=n), mixed (data=n/2 x model=2); the big table "
        "replicated on 8 fake devices needs 8 copies in host memory: use --layouts=model",
    )
    p.add_argument("--real", action="store_true", help="the real accelerator, not fake CPUs")
    p.add_argument("--mesh", help=argparse.SUPPRESS)  # worker mode
    args = p.parse_args()
    if args.mesh:
        print(
            "RESULT "
            + json.dumps(worker(argparse.Namespace(**{**vars(args), "devices": int(args.devices)})))
        )
        return
    rows = []
    for n in (int(x) for x in args.devices.split(",")):
        for mesh in meshes_for(n, args.layouts):
            env = dict(os.environ)
            if not args.real:
                env["JAX_PLATFORMS"] = "cpu"
                env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
            cmd = [sys.executable, __file__, f"--mesh={json.dumps(mesh)}", f"--devices={n}"]
            cmd += [f"--{k}={getattr(args, k)}" for k in ("rows", "dim", "rank", "batch", "steps")]
            print("+ " + " ".join(cmd), flush=True)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            result = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode or not result:
                sys.exit(f"launch/scaling.py: {mesh} on {n} devices failed:\n{out.stderr[-3000:]}")
            row = json.loads(result[-1][len("RESULT ") :])
            rows.append(row)
            print("  " + ", ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} rows; table {args.rows} x {args.dim}, rank {args.rank})")
    if rows and rows[0]["platform"] == "cpu":
        print(FAKE_CPU_NOTE)
    _plot(rows, Path(args.out).with_suffix(".png"))


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))

    def kind(r):
        return (
            "data only"
            if r["mesh"].endswith("model=1")
            else ("model only" if r["mesh"].startswith("data=1x") else "data x model=2")
        )

    for mesh_kind in ("data only", "model only", "data x model=2"):
        sel = [r for r in rows if kind(r) == mesh_kind]
        if not sel:
            continue
        x = [r["devices"] for r in sel]
        axes[0].plot(x, [r["state_bytes_per_device"] / 2**20 for r in sel], "o-", label=mesh_kind)
        axes[1].plot(x, [r["examples_per_s"] for r in sel], "o-", label=mesh_kind)
    axes[0].set(xlabel="devices", ylabel="params + opt state per device (MiB)", xscale="log")
    axes[1].set(xlabel="devices", ylabel="examples/s", xscale="log")
    for ax in axes:
        ax.legend()
    fig.suptitle(
        "fake CPU devices: memory scaling, not speed" if rows[0]["platform"] == "cpu" else ""
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
