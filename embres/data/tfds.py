"""Texts and rows from TensorFlow Datasets by ``tfds:<name>[/<config>][:<version>][:<split>]``.

Shared by the STS task (``tfds:glue/stsb:validation``) and, through
:func:`tfds_text_file`, by the ``tfds:`` training source (e.g. ``tfds:wiki40b/tr:train`` on a
machine that can download it), which streams the split like a ``text:`` corpus. Needs the ``tfds`` extra (``pip install 'embres[tfds]'``:
tensorflow-cpu and tensorflow-datasets; TFDS does nothing without TensorFlow, not even mock
data).

TensorFlow and JAX share the process: either may be imported first. TensorFlow is kept off
any GPU (:func:`import_tfds`), so it does not reserve the accelerator memory JAX needs; with
the ``tensorflow-cpu`` wheel there is no GPU to hide anyway.

Example::

    from embres.data.tfds import iter_tfds_texts
    for text in iter_tfds_texts("tfds:glue/stsb:train", field="sentence1,sentence2"):
        ...
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SPEC_RE = re.compile(r"^(?P<name>[^:\[\]]+?)(?::(?P<version>\d+(?:\.\d+)*))?(?::(?P<split>.+))?$")


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """A parsed ``tfds:`` name: ``load_name`` (name plus version) and ``split``."""

    name: str
    version: str | None
    split: str | None

    @property
    def load_name(self) -> str:
        """What ``tfds.load`` takes: ``name[:version]``."""
        return f"{self.name}:{self.version}" if self.version else self.name


def parse_tfds_spec(spec: str) -> TfdsSpec:
    """Parses ``tfds:<name>[/<config>][:<version>][:<split>]`` (the prefix is optional).

    The split may use TFDS slicing, e.g. ``tfds:glue/stsb:train[:10%]``.

    Raises:
      ValueError: naming the spec and the expected form.
    """
    match = SPEC_RE.match(spec.removeprefix("tfds:"))
    if not match or not match["name"].strip():
        raise ValueError(
            f"cannot parse TFDS spec {spec!r}; expected 'tfds:<name>[/<config>][:<version>]"
            "[:<split>]', e.g. 'tfds:glue/stsb:validation'"
        )
    return TfdsSpec(match["name"], match["version"], match["split"])


def import_tfds(spec: str = "tfds") -> Any:
    """``tensorflow_datasets``, with TensorFlow kept off GPUs.

    Raises:
      ModuleNotFoundError: naming ``spec`` and the extra to install.
    """
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ModuleNotFoundError(
            f"{spec}: tensorflow-datasets is not importable ({e}); pip install 'embres[tfds]'"
        ) from e
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices; leave them
        pass
    return tfds


def iter_tfds_rows(spec: str, default_split: str = "train", **load_kwargs: Any) -> Iterator[dict]:
    """Examples of a TFDS split as dicts of numpy values (bytes for text features).

    Args:
      spec: ``tfds:<name>[/<config>][:<version>][:<split>]``.
      default_split: the split when ``spec`` names none.
      **load_kwargs: passed to ``tfds.load`` (e.g. ``data_dir``, ``download``).
    """
    parsed = parse_tfds_spec(spec)
    tfds = import_tfds(spec)
    dataset = tfds.load(parsed.load_name, split=parsed.split or default_split, **load_kwargs)
    yield from tfds.as_numpy(dataset)


def text_fields(spec: str, **builder_kwargs: Any) -> list[str]:
    """Names of the top-level text features of a TFDS dataset (from its builder info)."""
    parsed = parse_tfds_spec(spec)
    tfds = import_tfds(spec)
    features = tfds.builder(parsed.load_name, **builder_kwargs).info.features
    return [k for k, f in features.items() if isinstance(f, tfds.features.Text)]


def iter_tfds_texts(
    spec: str, field: str | None = None, *, data_dir: str | None = None
) -> Iterator[str]:
    """Texts of a TFDS split, one string per example and field, in dataset order.

    Args:
      spec: ``tfds:<name>[/<config>][:<version>][:<split>]``; the split defaults to ``train``.
      field: the text feature to read, or several comma-separated (``"sentence1,sentence2"``
        yields both sentences of each example in turn). None: ``text`` if the dataset has
        that feature, else its only text feature.
      data_dir: TFDS data folder (default: TFDS's own, ``~/tensorflow_datasets``).

    Raises:
      ModuleNotFoundError: tensorflow-datasets is not importable.
      ValueError: ``field`` is None and the dataset has several text features but no ``text``,
        or a named field is not in an example (the message lists the fields there are).
    """
    kwargs = {"data_dir": data_dir} if data_dir else {}
    if field is None:
        candidates = text_fields(spec, **kwargs)
        if "text" in candidates:
            fields = ["text"]
        elif len(candidates) == 1:
            fields = candidates
        else:
            raise ValueError(
                f"{spec}: field=None but the dataset has text features {candidates}; "
                "name one or several (comma-separated) with field="
            )
    else:
        fields = [f.strip() for f in field.split(",") if f.strip()]
    for example in iter_tfds_rows(spec, **kwargs):
        for name in fields:
            if name not in example:
                raise ValueError(
                    f"{spec}: field {name!r} not in the examples; they have {sorted(example)}"
                )
            yield as_text(example[name])


def as_text(value: Any) -> str:
    """A TFDS text value (bytes) as ``str``."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def tfds_text_file(spec: str, cache_root: str | None = None) -> str:
    """Writes a TFDS split's texts once to a text file (one per line) and returns its path.

    Training then streams it like any ``text:`` corpus, with resumable positions. The file
    lives under ``$EMBRES_CACHE`` (default ``~/.cache/embres``) and appears only when complete.
    """
    root = Path(cache_root or os.environ.get("EMBRES_CACHE", "~/.cache/embres")).expanduser()
    path = root / "tfds" / (re.sub(r"[^A-Za-z0-9._-]+", "_", spec) + ".txt")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        try:
            with open(partial, "w", encoding="utf-8") as f:
                for text in iter_tfds_texts(spec):
                    line = " ".join(text.split())
                    if line:
                        f.write(line + "\n")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return str(path)
