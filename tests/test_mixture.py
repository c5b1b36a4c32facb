"""Data mixtures: components drawn with their weights, resumable across a component's epoch
boundary, and a changed mixture refused on resume (through describe())."""

import functools
import types

import ml_collections
import numpy as np
import pytest

from embres import data
from embres.data import mixture as mixtures
from embres.data.translation import TranslationSource
from embres.testing import tiny_tokenizer

tokenizer = functools.cache(lambda: tiny_tokenizer("bert"))
WORDS = "the a cat dog runs fast slow house tree red blue green big small".split()


def write_pairs(path, n, start=0):
    rows = [f"{WORDS[i % 14]} {i + start}\t{WORDS[(i + 3) % 14]} {i + start}" for i in range(n)]
    path.write_text("en\ttr\n" + "\n".join(rows) + "\n")
    return path


def config(tmp_path, sizes=(3, 40, 400), weights=(0.5, 0.3, 0.2)):
    cfg = ml_collections.ConfigDict({"source": "mixture", "columns": "en,tr", "max_length": 16})
    cfg.mixture = ml_collections.ConfigDict()
    for i, (n, w) in enumerate(zip(sizes, weights, strict=True)):
        path = write_pairs(tmp_path / f"c{i}.tsv", n, start=1000 * i)
        kind = "dict" if i == 0 else "pairs"
        cfg.mixture[f"c{i}"] = ml_collections.ConfigDict(
            {"source": f"{kind}:{path}", "weight": w, "item_weight": 0.1 if i == 0 else 1.0}
        )
    return cfg


def source(mixture, seed=0, batch_size=32, index=0, count=1):
    return TranslationSource(
        tokenizer(), [t for _, t in mixture.pairs], [s for s, _ in mixture.pairs],
        np.arange(len(mixture.pairs), dtype=np.float32)[:, None], mixture.item_weights,
        batch_size=batch_size, max_length=16, pad_id=0, add_special_tokens=True, seed=seed,
        process_index=index, process_count=count, components=mixture.sampling(),
    )  # fmt: skip


def test_weights_are_honoured_in_expectation(tmp_path):
    mixture = mixtures.read_mixture(config(tmp_path))
    assert mixture.offsets == [0, 3, 43, 443] and mixture.names == ["en", "tr"]
    batches, size = 200, 32
    s = source(mixture, batch_size=size)
    items = np.concatenate([s.next_batch()["targets"][:, 0] for _ in range(batches)]).astype(int)
    counts = np.bincount(np.searchsorted(mixture.offsets, items, side="right") - 1, minlength=3)
    n, p = batches * size, mixture.probabilities
    np.testing.assert_allclose(p, [0.5, 0.3, 0.2])
    sigma = np.sqrt(n * p * (1 - p))
    assert (np.abs(counts - n * p) < 4 * sigma).all(), (counts, n * p, sigma)
    # every component is walked through in its own permutations: the 3-item one evenly
    small = np.bincount(items[items < 3], minlength=3)
    assert small.max() - small.min() <= 1
    # the weight field is the item's component item_weight (the dictionary's 0.1)
    batch = s.next_batch()
    np.testing.assert_allclose(batch["weight"], np.where(batch["targets"][:, 0] < 3, 0.1, 1.0))


def test_resume_across_a_component_boundary_gives_the_same_batches(tmp_path):
    mixture = mixtures.read_mixture(config(tmp_path))
    whole = source(mixture, seed=5, batch_size=8)
    expected = [whole.next_batch() for _ in range(10)]
    first = source(mixture, seed=5, batch_size=8)
    for _ in range(4):
        first.next_batch()
    state = first.get_state()
    assert state["batch"] == 4 and state["epochs"][0] >= 1  # the 3-item component wrapped
    resumed = source(mixture, seed=5, batch_size=8)
    resumed.set_state(state)
    for want in expected[4:]:
        got = resumed.next_batch()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    assert resumed.get_state()["epochs"][0] > state["epochs"][0]  # and wrapped again after
    # two processes take alternate positions of the same global batches
    halves = [source(mixture, seed=5, batch_size=8, index=i, count=2) for i in (0, 1)]
    for want in expected[:3]:
        parts = [h.next_batch()["targets"] for h in halves]
        np.testing.assert_array_equal(np.stack(parts, 1).reshape(-1, 1), want["targets"])
    with pytest.raises(ValueError, match="cannot resume from data position"):
        resumed.set_state({"epoch": 0, "index": 3})


def test_a_changed_mixture_is_refused(tmp_path):
    cfg = config(tmp_path)
    saved = mixtures.read_mixture(cfg).describe()
    assert saved["components"]["c0"] == {
        "source": f"dict:{tmp_path / 'c0.tsv'}",
        "weight": 0.5,
        "probability": 0.5,
        "item_weight": 0.1,
        "heldout": 0,
        "pairs": 3,
        "sha256": saved["components"]["c0"]["sha256"],
    }
    mixtures.check_same_mixture(saved, mixtures.read_mixture(cfg).describe())  # unchanged
    cfg.mixture.c2.weight = 0.6
    with pytest.raises(
        ValueError, match=r"c2\.probability 0\.2 -> 0\.428571; c2\.weight 0\.2 -> 0\.6 \(restore"
    ):
        mixtures.check_same_mixture(saved, mixtures.read_mixture(cfg).describe())
    cfg.mixture.c2.weight = 0.2
    write_pairs(tmp_path / "c1.tsv", 40, start=7)  # same size, other pairs
    with pytest.raises(ValueError, match=r"another data mixture: c1\.sha256 '[0-9a-f]+' -> "):
        mixtures.check_same_mixture(saved, mixtures.read_mixture(cfg).describe())
    del cfg.mixture["c1"]
    with pytest.raises(ValueError, match="c1 removed"):
        mixtures.check_same_mixture(saved, mixtures.read_mixture(cfg).describe())


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"source": "pairs:x.tsv", "weight": 0}, r"mixture\.m\.weight=0; expected a number > 0"),
        ({"source": "text:x.txt", "weight": 1}, r"m\.source='text:x.txt'; expected 'pairs:"),
        ({"source": "pairs:x.tsv", "weight": 1, "wieght": 2}, r"unknown fields \['wieght'\]"),
        ({"source": "pairs:/no/such.tsv", "weight": 1}, "no such file"),
    ],
)
def test_bad_components_name_the_field(fields, match):
    cfg = types.SimpleNamespace(
        get=lambda key, default=None: {"m": fields} if key == "mixture" else default
    )
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        mixtures.check_mixture(cfg)


def test_the_registry_builds_a_mixture_source(tmp_path):
    cfg = config(tmp_path)
    built = data.make_source(
        cfg, tokenizer(), vocab_size=100, pad_id=0, batch_size=8, seed=0,
        process_index=1, process_count=2,
    )  # fmt: skip
    batch = built.next_batch()
    assert batch["ids"].shape[0] == 4 and "targets" not in batch
    assert set(built.get_state()) == {"batch", "epochs", "indices"}
    with pytest.raises(ValueError, match="'mixture' takes no argument"):
        data.parse_spec("mixture:x")


def test_drawn_items_are_exactly_the_items_a_run_reads(tmp_path):
    """A run embeds only the items its batches draw: the set drawn_items predicts is the set
    the source yields over the same number of batches (the 400-item component is sampled,
    the small ones walked through)."""
    from embres.data.translation import drawn_items

    mixture = mixtures.read_mixture(config(tmp_path))
    batches, size = 12, 16
    s = source(mixture, seed=5, batch_size=size)
    seen = np.concatenate([s.next_batch()["targets"][:, 0] for _ in range(batches)]).astype(int)
    predicted = drawn_items(mixture.sampling(), 5, size, batches)
    np.testing.assert_array_equal(predicted, np.unique(seen))
    assert len(predicted) < len(mixture.pairs)  # not every item: 192 draws of 443 items
    more = drawn_items(mixture.sampling(), 5, size, batches + 5)
    assert set(predicted) <= set(more)  # a longer run reads a superset
