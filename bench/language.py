r"""The language students and the data-scaling study: each row one ``embres.train`` command.

    python bench/language.py --rows students           # the students and their second stages
    python bench/language.py --rows scaling            # static and hybrid against data size
    python bench/language.py --rows static,static_ft --root runs/tr

Every row is a command a user runs (printed before it runs), in its own workdir under
``--root``; rows that start from another row's export run after it. The English two-block
hybrid the ``hybrid*`` rows extend is ``--english`` (a ``configs/hybrid.py`` workdir; trained
first when missing). The teacher's vectors of the parallel sentences are shared through one
cache folder (``--config.data.cache_dir``); the teacher's own scores through
``EMBRES_TEACHER_EVAL_CACHE``. The wall time and peak RSS of each row are the whole command's
(``/usr/bin/time``). A row whose workdir holds a finished run is read, not rerun.

The scaling rows train on uniform samples (seeded) of the decontaminated parallel files
(STS-B train, Tatoeba, news, grammar book: 167k pairs), written under ``<root>/data``, with
the same steps and batch for every size: what changes is how many distinct pairs the student
sees.

The numbers are the run's own end-of-training evaluations (``summary`` lines of its
``metrics.jsonl``; dev splits): STSb-TR dev, STS-B dev, SICK trial (Spearman x100), bitext
R@1 on NTREX (news, professional translation) and on STS-B dev <-> STSb-TR dev, both ways,
and the Turkish sentiment probe. Writes ``--out`` (JSON) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import defaults  # bench/defaults.py: the same summary lines

REPO = Path(__file__).resolve().parents[1]
PARALLEL = ("en_tr_stsb_train", "en_tr_tatoeba", "en_tr_news", "en_tr_gb")
SIZES = (2_000, 10_000, 40_000, 0)  # 0: every pair
CFG = {
    "static": "configs/language_static.py",
    "hybrid": "configs/language_hybrid.py:init_from={english}",
    "full": "configs/language_full.py",
    "transfer": "configs/language_transfer.py",
    "finetune": "configs/language_finetune.py:init_from={root}/{first}",
}


def _rows() -> dict[str, tuple[str, str, str, list[str], str | None]]:
    """name -> (group, setting, config, extra flags, first-stage row or None)."""
    rows = {
        "static": ("students", "static, mixture (default)", CFG["static"], [], None),
        "static_ft": ("students", "static + second stage", CFG["finetune"], [], "static"),
        "hybrid": ("students", "two-block hybrid, mixture", CFG["hybrid"], [], None),
        "hybrid_ft": ("students", "hybrid + second stage", CFG["finetune"], [], "hybrid"),
        "full": ("students", "whole transformer, mixture", CFG["full"], [], None),
        "full_ft": ("students", "whole transformer + second stage", CFG["finetune"], [], "full"),
        "static_stsb": (
            "students",
            "static, STS-B train pairs only",
            CFG["static"],
            ["--config.data.source=pairs:$EMBRES_DATA_DIR/parallel/en_tr_stsb_train.tsv"],
            None,
        ),
    }
    for size in SIZES:
        label = f"{size:,} pairs" if size else "all 167k pairs"
        data = f"--config.data.source=pairs:{{root}}/data/pairs_{size or 'all'}.tsv"
        for student in ("static", "hybrid"):
            rows[f"{student}_n{size or 'all'}"] = (
                "scaling",
                f"{student}, {label}",
                CFG[student],
                [data],
                None,
            )
    return rows


ROWS = _rows()
GROUPS = {"students": [n for n, r in ROWS.items() if r[0] == "students"],
          "scaling": [n for n, r in ROWS.items() if r[0] == "scaling"]}  # fmt: skip
COLUMNS = (
    ("sts/stsb_tr_dev", "STSb-TR dev", "{:.2f}"),
    ("sts/stsb_dev", "STS-B dev", "{:.2f}"),
    ("sts/sick_dev", "SICK trial", "{:.2f}"),
    ("bitext/en_tr_ntrex_tr_to_en_r@1", "NTREX TR->EN", "{:.3f}"),
    ("bitext/en_tr_ntrex_en_to_tr_r@1", "NTREX EN->TR", "{:.3f}"),
    ("bitext/tr_to_en_r@1", "STS dev TR->EN", "{:.3f}"),
    ("bitext/en_to_tr_r@1", "STS dev EN->TR", "{:.3f}"),
    ("probe/accuracy", "TR sentiment", "{:.3f}"),
)


def write_samples(root: Path, data_dir: Path, seed: int = 0) -> None:
    """``<root>/data/pairs_<n>.tsv``: seeded uniform samples of every decontaminated pair."""
    out = root / "data"
    if all((out / f"pairs_{n or 'all'}.tsv").exists() for n in SIZES):
        return
    pairs: list[str] = []
    exclude = evaluation_sentences()  # the runs' own check would refuse these pairs
    for name in PARALLEL:
        lines = (data_dir / "parallel" / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
        if lines[0].split("\t")[:2] != ["en", "tr"]:
            raise SystemExit(f"{name}.tsv: expected the header 'en<TAB>tr', got {lines[0]!r}")
        pairs += [ln for ln in lines[1:] if ln.strip() and not held_out(ln, exclude)]
    random.Random(seed).shuffle(pairs)
    out.mkdir(parents=True, exist_ok=True)
    for n in SIZES:
        chosen = pairs[:n] if n else pairs
        (out / f"pairs_{n or 'all'}.tsv").write_text("en\ttr\n" + "\n".join(chosen) + "\n")


def evaluation_sentences() -> set[str]:
    """The normalised sentences of the language configs' evaluation sets."""
    from embres import configlib
    from embres.data import eval_sets

    config = configlib.base_config()
    configlib.cross_lingual_training(config, "tr")
    found = eval_sets.evaluation_sentences(config.evals)
    return {eval_sets.normalize(t) for texts in found.values() for t in texts}


def held_out(line: str, exclude: set[str]) -> bool:
    from embres.data.eval_sets import normalize

    return any(normalize(side) in exclude for side in line.split("\t")[:2])


def command(name: str, root: Path, english: Path) -> list[str]:
    """The row's ``python -m embres.train`` command (``$EMBRES_DATA_DIR`` expanded)."""
    _, _, config, extra, first = ROWS[name]
    config = config.format(root=root, first=first, english=english)
    flags = [os.path.expandvars(f.format(root=root)) for f in extra]
    cache = [f"--config.data.cache_dir={root / 'cache'}"] if first is None else []
    return [sys.executable, "-m", "embres.train", f"--config={config}",
            f"--workdir={root / name}", *cache, *flags]  # fmt: skip


def run(cmd: list[str], env: dict) -> dict:
    """Runs ``cmd`` under ``/usr/bin/time``: its wall seconds and peak RSS (GB)."""
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    timed = ["/usr/bin/time", "-f", "peak_rss_kb=%M cpu_s=%U+%S"]
    timed = timed if Path("/usr/bin/time").exists() else []
    proc = subprocess.run(timed + cmd, env=env, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    rss = [ln for ln in proc.stderr.splitlines() if ln.startswith("peak_rss_kb=")]
    out = {"seconds": round(time.perf_counter() - start, 1)}
    if rss:  # CPU seconds: what a busy machine barely moves (wall time is the user's)
        fields = dict(f.split("=") for f in rss[-1].split())
        out["peak_rss_gb"] = round(int(fields["peak_rss_kb"]) / 1e6, 2)
        out["cpu_seconds"] = round(sum(float(x) for x in fields["cpu_s"].split("+")), 1)
    return out


def table(results: dict, names: list[str]) -> str:
    header = ["row", "setting", "wall s", "CPU s", "peak RSS GB"]
    header += [label for _, label, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        entry = results[name]
        row = dict(entry["student"])
        probe = next((k for k in row if k.startswith("probe/") and "acc" in k), None)
        if probe:
            row["probe/accuracy"] = row[probe]
        cells = [name, entry["setting"], f"{entry.get('seconds', float('nan')):.0f}",
                 f"{entry.get('cpu_seconds', float('nan')):.0f}",
                 str(entry.get("peak_rss_gb", "-"))]  # fmt: skip
        cells += [defaults.cell(row, key, fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_scaling(results: dict, path: Path) -> None:
    """STSb-TR dev, STS-B dev and NTREX R@1 against the pairs trained on, per student."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signals = (("sts/stsb_tr_dev", "STSb-TR dev"), ("sts/stsb_dev", "STS-B dev"),
               ("bitext/en_tr_ntrex_tr_to_en_r@1", "NTREX TR->EN R@1"))  # fmt: skip
    fig, axes = plt.subplots(1, len(signals), figsize=(4 * len(signals), 3.2))
    for student in ("static", "hybrid"):
        points = sorted(
            (size or 167_081, results[f"{student}_n{size or 'all'}"]["student"])
            for size in SIZES
            if "student" in results.get(f"{student}_n{size or 'all'}", {})
        )
        for ax, (key, label) in zip(axes, signals, strict=True):
            if points:
                ax.plot(
                    [n for n, _ in points], [r.get(key) for _, r in points], "o-", label=student
                )
            ax.set_xscale("log")
            ax.set_xlabel("translation pairs trained on")
            ax.set_title(label, fontsize=10)
            ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="students", help=f"groups {list(GROUPS)} or rows")
    parser.add_argument("--root", default="runs/tr", help="workdirs go under here")
    parser.add_argument("--english", default="runs/h_transfer", help="the English hybrid")
    parser.add_argument("--out", default="docs/results/language/language.json")
    parser.add_argument("--plot", default="", help="write the scaling plot (PNG) here")
    args = parser.parse_args()
    root, english = Path(args.root).resolve(), Path(args.english).resolve()
    names = [n for part in args.rows.split(",") for n in GROUPS.get(part.strip(), [part.strip()])]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; expected groups {list(GROUPS)} or {list(ROWS)}")
    data_dir = Path(os.environ.get("EMBRES_DATA_DIR", REPO.parent / "shared" / "data"))
    write_samples(root, data_dir)
    env = {"EMBRES_TEACHER_EVAL_CACHE": str(root / "teacher_evals"), **os.environ}
    if any(n.startswith("hybrid") for n in names) and not (english / "export").is_dir():
        cmd = [sys.executable, "-m", "embres.train", "--config=configs/hybrid.py",
               f"--workdir={english}"]  # fmt: skip
        run(cmd, env)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in names:
        first = ROWS[name][4]
        if first and "student" not in summaries(root / first):
            raise SystemExit(f"row {name!r} starts from row {first!r}: run that one first")
        entry = results.setdefault(name, {})
        if "student" not in summaries(root / name):
            entry.update(run(command(name, root, english), env))
        done = summaries(root / name)
        shown = ["python", *command(name, root, english)[1:]]
        entry.update({"group": ROWS[name][0], "setting": ROWS[name][1],
                      "command": " ".join(shown).replace(str(REPO) + "/", ""),
                      "student": done.get("student", {}), "teacher": done.get("teacher", {})})  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
    print(table(results, names))
    if args.plot:
        plot_scaling(results, Path(args.plot))
    return 0


def summaries(workdir: Path) -> dict[str, dict]:
    """The last ``summary`` line per model in ``metrics.jsonl`` ({} if the run never ended)."""
    return defaults.summaries(workdir) if (workdir / "metrics.jsonl").exists() else {}


if __name__ == "__main__":
    raise SystemExit(main())
