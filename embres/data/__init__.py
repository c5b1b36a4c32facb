"""Data sources by name: ``"vocab"``, ``"text:PATH"``, ``"tfds:NAME/CONFIG:SPLIT"``, ``"pairs:PATH"``,
``"sentences:stsb,sick"`` (the STS train splits' sentences, no evaluation sentence),
``"scored:stsb,sick"`` (their scored pairs, scores rescaled to [0, 1]), ``"mixture"``
(translation-pair files and dictionaries of ``config.data.mixture``, sampled by weight:
:mod:`~embres.data.mixture`).

A source yields host-local numpy batches ``{"ids": int32 [b, L], "mask": int32 [b, L], ...}``
with ``b = batch_size // process_count`` and a fixed ``L = max_length`` (one compiled shape),
reports its position with ``get_state()`` and resumes from it with ``set_state(state)``, so
a resumed run sees exactly the batches an uninterrupted one would have. Each process reads
its own slice (lines ``i`` with ``i % process_count == process_index``; its own random
stream for ``vocab``).

Also offered: ``token_weights()`` ([vocab] token frequencies, for frequency-aware inits)
and ``heldout_texts(n)`` (text never trained on, for fidelity checks).

Modules: :mod:`~embres.data.registry` (parse, check, build by kind), one module per kind
(:mod:`~embres.data.vocab`, :mod:`~embres.data.text`, :mod:`~embres.data.tfds`,
:mod:`~embres.data.pairs`, :mod:`~embres.data.sentences`), :mod:`~embres.data.batching`
(what they share), :mod:`~embres.data.cached` (a corpus with the teacher's sentence vectors
computed once), :mod:`~embres.data.translation` (translation pairs in memory, sampled as a mixture),
:mod:`~embres.data.eval_sets` (the evaluation sets' files and sentences) and
:mod:`~embres.data.overlap` (:func:`check_eval_overlap`: no training source may hold an
evaluation sentence).
"""

from embres.data.batching import Source, pad_batch
from embres.data.overlap import check_eval_overlap
from embres.data.registry import (
    REGISTRY,
    SOURCES,
    Spec,
    check_spec,
    make_source,
    pairs_file,
    parse_spec,
    score_range,
    text_file,
)
from embres.data.tfds import tfds_text_file

__all__ = [
    "REGISTRY",
    "SOURCES",
    "Source",
    "Spec",
    "check_eval_overlap",
    "check_spec",
    "make_source",
    "pairs_file",
    "pad_batch",
    "parse_spec",
    "score_range",
    "text_file",
    "tfds_text_file",
]
