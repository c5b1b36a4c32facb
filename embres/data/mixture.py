"""``config.data.source = "mixture"``: several translation-pair files and dictionaries, weighed.

Short conversational pairs must not drown the pairs of the evaluation's domain just because
there are more of them: each component is drawn with a probability of its own, whatever its
size. The config::

    c.data.source = "mixture"
    c.data.columns = "en,tr"                 # <teacher language>,<new language>, every file
    c.data.mixture = section(
        stsb=section(source="pairs:" + data_path("parallel/en_tr_stsb_train.tsv"), weight=0.5),
        tatoeba=section(source="pairs:" + data_path("parallel/en_tr_tatoeba.tsv"), weight=0.3),
        muse=section(source="dict:" + data_path("dict/en_tr_muse.tsv"), weight=0.2,
                     item_weight=0.1),
    )

Per component: ``source`` is ``pairs:PATH`` (sentence pairs) or ``dict:PATH`` (word pairs;
the same TSV form), ``weight`` > 0 its sampling weight (probabilities are the weights
normalised), ``item_weight`` (default 1) the loss weight of each of its items (the batches'
``weight``), ``heldout`` (default 0) its first pairs kept out of training. Components are
taken in name order.

:func:`read_mixture` reads every file once; :meth:`Mixture.sampling` gives the ranges
:class:`embres.data.translation.TranslationSource` samples from, and
:meth:`Mixture.describe` what a checkpoint records, so that a resume with another mixture is
refused (:func:`check_same_mixture`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("pairs", "dict")
FIELDS = ("source", "weight", "item_weight", "heldout")


@dataclasses.dataclass(frozen=True)
class Component:
    """One file of a mixture (see the module docstring)."""

    name: str
    kind: str  # "pairs" or "dict"
    path: Path
    weight: float
    item_weight: float = 1.0
    heldout: int = 0

    @property
    def source(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_mixture(cfg: Any) -> list[Component]:
    """The components of ``config.data.mixture`` in name order (no file is read).

    Raises:
      ValueError: naming the component and field at fault, or an empty mixture.
    """
    mixture = dict(cfg.get("mixture") or {})
    if not mixture:
        raise ValueError(
            "config.data.source='mixture' needs config.data.mixture: {name: {source: "
            "'pairs:PATH' or 'dict:PATH', weight: w}, ...}"
        )
    return [_component(name, dict(mixture[name])) for name in sorted(mixture)]


def _component(name: str, fields: dict) -> Component:
    where = f"config.data.mixture.{name}"
    if unknown := sorted(set(fields) - set(FIELDS)):
        raise ValueError(f"{where} has unknown fields {unknown}; expected {list(FIELDS)}")
    kind, _, path = str(fields.get("source", "")).partition(":")
    if kind not in KINDS or not path:
        raise ValueError(
            f"{where}.source={fields.get('source')!r}; expected 'pairs:PATH' or 'dict:PATH'"
        )
    weight, item_weight = fields.get("weight"), fields.get("item_weight", 1.0)
    if not isinstance(weight, int | float) or not weight > 0:
        raise ValueError(f"{where}.weight={weight!r}; expected a number > 0")
    if not isinstance(item_weight, int | float) or not item_weight >= 0:
        raise ValueError(f"{where}.item_weight={item_weight!r}; expected a number >= 0")
    heldout = fields.get("heldout", 0)
    if not isinstance(heldout, int) or heldout < 0:
        raise ValueError(f"{where}.heldout={heldout!r}; expected a count >= 0")
    return Component(
        name, kind, Path(path).expanduser(), float(weight), float(item_weight), heldout
    )


def check_mixture(cfg: Any) -> list[Component]:
    """:func:`parse_mixture` and every file exists (FileNotFoundError naming it)."""
    components = parse_mixture(cfg)
    for c in components:
        if not c.path.is_file():
            raise FileNotFoundError(
                f"config.data.mixture.{c.name}.source={c.source!r}: no such file (expected a "
                "TSV with a header naming its columns)"
            )
    return components


@dataclasses.dataclass
class Mixture:
    """Every component's items, read once (see the module docstring).

    ``pairs`` are ``(source text, target text)`` (``config.data.columns`` in that order),
    the components' training items concatenated in name order; ``offsets[i]:offsets[i+1]``
    are component ``i``'s.
    """

    components: list[Component]
    pairs: list[tuple[str, str]]
    offsets: list[int]
    held: list[tuple[str, str]]
    names: list[str]
    digests: list[str]

    @property
    def probabilities(self) -> np.ndarray:
        weights = np.asarray([c.weight for c in self.components], np.float64)
        return weights / weights.sum()

    @property
    def item_weights(self) -> np.ndarray:
        """float32 [len(pairs)]: each item's component ``item_weight``."""
        sizes = np.diff(self.offsets)
        return np.repeat([c.item_weight for c in self.components], sizes).astype(np.float32)

    def sampling(self) -> list[tuple[int, int, float]]:
        """``(start, stop, probability)`` per component, for ``TranslationSource(components=)``."""
        return [
            (self.offsets[i], self.offsets[i + 1], float(p))
            for i, p in enumerate(self.probabilities)
        ]

    def describe(self) -> dict[str, Any]:
        """JSON-able: the columns and, per component, its source, kind, weight, probability,
        item weight, held-out count, training pairs and the sha256 of its file."""
        sizes = np.diff(self.offsets)
        return {
            "columns": list(self.names),
            "components": {
                c.name: {
                    "source": c.source,
                    "weight": c.weight,
                    "probability": round(float(p), 6),
                    "item_weight": c.item_weight,
                    "heldout": c.heldout,
                    "pairs": int(n),
                    "sha256": digest,
                }
                for c, p, n, digest in zip(
                    self.components, self.probabilities, sizes, self.digests, strict=True
                )
            },
        }


def read_mixture(cfg: Any, exclude: set[str] | None = None) -> Mixture:
    """Reads every component of ``config.data.mixture`` (``cfg`` is ``config.data``);
    ``exclude``: normalised sentences whose pairs are left out (see ``read_pairs``).

    Raises:
      ValueError / FileNotFoundError: a bad component (see :func:`parse_mixture`), a file or
        line at fault (:func:`embres.data.translation.read_pairs`), a component with no
        training pair after its held-out ones, or files whose columns differ.
    """
    from embres.cache import file_digest
    from embres.data.translation import read_pairs

    components = check_mixture(cfg)
    columns = cfg.get("columns", "") or ""
    pairs, offsets, held, digests, names = [], [0], [], [], None
    for c in components:
        read, found = read_pairs(c.path, columns, exclude)
        if names is not None and found != names:
            raise ValueError(
                f"config.data.mixture.{c.name}: {c.path} has columns {found}, the others "
                f"{names}; set config.data.columns='a,b' to name the two every file holds"
            )
        names = found
        if len(read) <= c.heldout:
            raise ValueError(
                f"config.data.mixture.{c.name}: {c.path} has {len(read)} pairs, none left "
                f"after heldout={c.heldout}"
            )
        held += read[: c.heldout]
        pairs += read[c.heldout :]
        offsets.append(len(pairs))
        digests.append(file_digest(c.path))
    return Mixture(components, pairs, offsets, held, list(names), digests)


def check_same_mixture(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuses a resume whose mixture differs from the one the checkpoint was trained on.

    Args:
      saved, current: :meth:`Mixture.describe` of the checkpoint and of this run.

    Raises:
      ValueError: naming each difference (component added or removed, field changed).
    """
    if saved == current:
        return
    differences = []
    if saved.get("columns") != current.get("columns"):
        differences.append(f"columns {saved.get('columns')} -> {current.get('columns')}")
    old, new = saved.get("components", {}), current.get("components", {})
    for name in sorted(set(old) | set(new)):
        if name not in new or name not in old:
            differences.append(f"{name} {'removed' if name not in new else 'added'}")
            continue
        for field in sorted(set(old[name]) | set(new[name])):
            if old[name].get(field) != new[name].get(field):
                differences.append(
                    f"{name}.{field} {old[name].get(field)!r} -> {new[name].get(field)!r}"
                )
    raise ValueError(
        "the checkpoint was trained on another data mixture: "
        + "; ".join(differences)
        + " (restore the mixture, or start a new --workdir)"
    )
