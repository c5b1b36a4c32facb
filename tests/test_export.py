"""Static exports load in Model2Vec and sentence-transformers with the same vectors as embres."""

import numpy as np
import pytest

from embres import ModelAdapter
from embres.export import dequantize_int8, quantize_int8


@pytest.fixture(scope="module")
def adapter():
    return ModelAdapter("all-MiniLM-L6-v2", target_dim=64)


@pytest.fixture(scope="module")
def sts_sentences(data_dir):
    lines = (data_dir / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines()
    return [s for line in lines for s in line.split("\t")[5:7]]


def _min_cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def test_model2vec_and_sentence_transformers_load_the_export(tmp_path, adapter, sts_sentences):
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    out = adapter.save(tmp_path / "static")
    ours = adapter.adapt(sts_sentences)
    m2v = StaticModel.from_pretrained(str(out)).encode(sts_sentences)
    st = SentenceTransformer(str(out), device="cpu").encode(sts_sentences)
    assert m2v.shape == st.shape == ours.shape
    assert _min_cos(ours, m2v) >= 0.9999
    assert _min_cos(ours, st) >= 0.9999
    np.testing.assert_array_equal(ModelAdapter.load(out).adapt(sts_sentences[:50]), ours[:50])


def test_int8_round_trip(tmp_path, adapter, sts_sentences):
    q, scale = quantize_int8(adapter.table)
    assert q.dtype == np.int8 and scale.shape == (adapter.table.shape[0],)
    err = np.abs(dequantize_int8(q, scale) - adapter.table).max(axis=1)
    assert np.all(err <= scale / 2 + 1e-7)
    out = adapter.save(tmp_path / "static8", int8=True)
    small = ModelAdapter.load(out, int8=True)
    assert _min_cos(small.adapt(sts_sentences), adapter.adapt(sts_sentences)) > 0.99


def test_export_rejects_a_table_smaller_than_the_vocabulary(tmp_path, adapter):
    from embres.export import export_static

    with pytest.raises(ValueError, match="rows but the tokenizer has"):
        export_static(adapter.table[:10], adapter.tokenizer, tmp_path / "bad")
