"""Behaviour fingerprint of every shipped config: the loss at every step of its ``:runlocal``
run and the exported student's vectors of a few sentences.

Run before and after a refactor that must not change behaviour, then compare::

    EMBRES_DATA_DIR=../shared/data python bench/fingerprint.py --out /tmp/before.json
    EMBRES_DATA_DIR=../shared/data python bench/fingerprint.py --out /tmp/after.json \\
        --compare /tmp/before.json

Each run is a fresh ``train_and_evaluate`` in a temporary workdir (deterministic: fixed
seeds, one process); ``--compare`` prints the largest loss and vector difference per run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["A man is playing a guitar.", "Bir adam gitar çalıyor.", "Kedi süt içiyor.", ""]
# (name, config file, arg, first stage the run starts from or None)
RUNS = [
    ("lowrank", "lowrank.py", "runlocal", None),
    ("projection", "projection.py", "runlocal", None),
    ("hybrid", "hybrid.py", "runlocal", None),
    ("hybrid_transfer1", "hybrid.py", "runlocal,variant=transfer1", None),
    ("hybrid_conv", "hybrid.py", "runlocal,variant=conv", None),
    ("hybrid_attention", "hybrid.py", "runlocal,variant=attention", None),
    ("language_static", "language_static.py", "runlocal", None),
    ("language_static_teacher_init", "language_static.py", "runlocal,init=teacher", None),
    ("language_transfer", "language_transfer.py", "runlocal", None),
    ("hybrid_finetune", "hybrid_finetune.py", "runlocal,init_from={hybrid}", "hybrid"),
    (
        "language_finetune",
        "language_finetune.py",
        "runlocal,init_from={language_static}",
        "language_static",
    ),
]


def load_config(path: Path, arg: str):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def vectors(export_dir: Path) -> list[list[float]]:
    from embres.model_adapter import ModelAdapter

    if not (export_dir / "embres_static.json").is_file():  # a transformer export
        from embres import EmbeddingExtractor

        vecs = EmbeddingExtractor(str(export_dir)).extract_embeddings(SENTENCES)
    else:
        vecs = ModelAdapter.load(export_dir).adapt(SENTENCES)
    return np.asarray(vecs).round(6).tolist()


def run_all(config_dir: Path, names: set[str] | None) -> dict:
    from embres.train import train_and_evaluate

    results, workdirs = {}, {}
    root = Path(tempfile.mkdtemp(prefix="fingerprint-"))
    for name, file, arg, needs in RUNS:
        if names and name not in names and not any(name == n for n in names):
            continue
        if needs is not None and needs not in workdirs:
            continue
        arg = arg.format(**{k: str(v) for k, v in workdirs.items()})
        t = time.time()
        workdir = root / name
        out = train_and_evaluate(load_config(config_dir / file, arg), workdir)
        workdirs[name] = workdir
        results[name] = {
            "losses": {str(k): v for k, v in sorted(out["losses"].items())},
            "vectors": vectors(workdir / "export"),
            "seconds": round(time.time() - t, 1),
        }
        print(f"{name}: losses {list(out['losses'].values())}", flush=True)
    return results


def compare(before: dict, after: dict) -> None:
    for name in sorted(set(before) | set(after)):
        if name not in before or name not in after:
            print(f"{name:32s} only in {'after' if name in after else 'before'}")
            continue
        b, a = before[name], after[name]
        steps = sorted(set(b["losses"]) & set(a["losses"]), key=int)
        dl = max((abs(b["losses"][s] - a["losses"][s]) for s in steps), default=float("nan"))
        vb, va = np.asarray(b["vectors"]), np.asarray(a["vectors"])
        dv = float(np.abs(vb - va).max()) if vb.shape == va.shape else float("inf")
        print(f"{name:32s} max |loss diff| {dl:.2e}  max |vector diff| {dv:.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--configs", default=str(REPO / "configs"))
    parser.add_argument("--only", default="", help="comma-separated run names")
    parser.add_argument("--compare", default="")
    args = parser.parse_args()
    names = set(filter(None, args.only.split(",")))
    results = run_all(Path(args.configs), names or None)
    Path(args.out).write_text(json.dumps(results, indent=1))
    if args.compare:
        compare(json.loads(Path(args.compare).read_text()), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
