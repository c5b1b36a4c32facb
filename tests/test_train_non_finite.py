"""A run never reports or exports non-finite parameters (issue 24 row 1), for every objective.

A learning rate of 1e5 (a typo for 1e-5) takes the parameters beyond float16's range in one
step while the loss stays finite; before the guard, runs exported tables of inf. Each run
here must stop at that step, name it and the last good checkpoint it keeps, and leave no
export. The CLI form of the lowrank run is in tests/test_bad_inputs_train.py.
"""

from __future__ import annotations

import re
import shutil
import string

import numpy as np
import pytest
from _train_utils import tiny_config

from embres import train
from embres.metrics import NonFiniteLossError

EN = ["a man is playing a guitar", "the cat sits on the mat", "two dogs run in the park"]
TR = ["bir adam gitar çalıyor", "kedi paspasın üzerinde oturuyor", "iki köpek parkta koşuyor"]


@pytest.fixture(scope="module")
def wordpiece_bert(tiny_models, tmp_path_factory):
    """A tiny BERT with an uncased WordPiece tokenizer (a bilingual vocabulary extends it)."""
    from transformers import BertTokenizerFast

    words = sorted({w for text in EN for w in text.split()})
    chars = list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *words]))
    source = tiny_models("bert", hidden_size=32, num_layers=2, vocab_size=len(vocab))
    directory = tmp_path_factory.mktemp("wordpiece_bert") / "model"
    shutil.copytree(source, directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (directory / name).unlink(missing_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(directory / "vocab.txt"), do_lower_case=True).save_pretrained(directory)
    return directory


def _static_distill(model_dir, tmp_path):
    return tiny_config(model_dir, "projection")


def _cross_lingual(model_dir, tmp_path):
    pairs, text = tmp_path / "en_tr.tsv", tmp_path / "tr.txt"
    rows = [f"{e}\t{t}" for e, t in zip(EN, TR, strict=True)] * 8
    pairs.write_text("en\ttr\n" + "\n".join(rows) + "\n", encoding="utf-8")
    text.write_text("\n".join(TR * 4) + "\n", encoding="utf-8")
    config = tiny_config(model_dir, "language_static")
    config.data.source = f"pairs:{pairs}"
    config.objective.vocab_text = str(text)
    config.objective.dictionary = ""
    config.objective.vocab_size = 120
    return config


def _token_distill(model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{EN[i % 3]} number {i}\n" for i in range(120)))
    config = tiny_config(model_dir, "hybrid")
    config.data.source = f"text:{corpus}"
    config.data.heldout = 8
    config.adapter.max_positions = 16
    return config


@pytest.mark.parametrize("make", [_static_distill, _cross_lingual, _token_distill])
def test_learning_rate_1e5_stops_at_the_step_keeps_the_checkpoint_and_exports_nothing(
    wordpiece_bert, tmp_path, make
):
    config = make(wordpiece_bert, tmp_path)
    config.total_steps = 4
    config.optimizer.learning_rate = 1e5  # step 1 has lr 0 (warmup), step 2 jumps by ~1e5
    config.checkpoint.every_steps = 1
    config.export = True
    work = tmp_path / "work"
    with pytest.raises(NonFiniteLossError) as e:
        train.train_and_evaluate(config, work)
    message = str(e.value)
    step = int(re.search(r"non-finite \w+ at step (\d+)", message).group(1))
    kept = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert kept and max(kept) < step, (kept, message)
    assert f"the last good checkpoint (step {max(kept)}) is kept in {work / 'checkpoints'}" in (
        message
    )
    assert not (work / "export").exists()
    assert not (work / "summary.md").exists()
    # The checkpoint kept is good: every saved parameter finite and in range.
    import jax
    import orbax.checkpoint as ocp

    state = ocp.StandardCheckpointer().restore(work / "checkpoints" / str(max(kept)) / "state")
    assert all(np.all(np.abs(np.asarray(x)) <= 65504) for x in jax.tree.leaves(state["params"]))
