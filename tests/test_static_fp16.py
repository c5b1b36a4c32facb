"""Static exports store their table in float16 by default (float32 on request): every entry
within float16's rounding, sentence vectors within cosine 0.9999, half the bytes on disk;
embres computes in float32 either way, and int8 exports are as they were."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from embres import ModelAdapter
from embres.export import FLOAT_FILE, INT8_FILE, META_FILE, export_static, load_student
from embres.testing import WORDS, tiny_tokenizer

EPS16 = float(np.finfo(np.float16).eps)  # 2**-10: the spacing of float16 numbers in [1, 2)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer("bert")


@pytest.fixture(scope="module")
def table(tokenizer):
    """Rows of very different norms (1e-3 .. 1e2), as SIF weighting gives."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(len(tokenizer), 16)).astype(np.float32)
    return rows * np.geomspace(1e-3, 1e2, len(rows), dtype=np.float32)[:, None]


@pytest.fixture(scope="module")
def sentences():
    rng = np.random.default_rng(7)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 12))) for _ in range(200)]


def _cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_default_export_is_float16_within_its_precision(tmp_path, tokenizer, table, sentences):
    out = export_static(table, tokenizer, tmp_path / "half")
    stored = load_file(str(out / FLOAT_FILE))["embeddings"]
    assert stored.dtype == np.float16
    assert json.loads((out / META_FILE).read_text())["dtype"] == "float16"
    loaded = load_student(out)
    assert loaded.table.dtype == np.float32  # upcast once, on load
    error = np.abs(loaded.table - table).max(axis=1)
    assert np.all(error <= EPS16 * np.linalg.norm(table, axis=1))
    ours = load_student(export_static(table, tokenizer, tmp_path / "full", dtype="float32"))
    assert _cosines(loaded.encode(sentences), ours.encode(sentences)).min() >= 0.9999
    half, full = ((p / FLOAT_FILE).stat().st_size for p in (out, tmp_path / "full"))
    assert stored.nbytes == table.nbytes // 2 and full - half >= stored.nbytes - 16  # header


def test_float32_on_request_is_the_table_bit_for_bit(tmp_path, tokenizer, table):
    out = export_static(table, tokenizer, tmp_path / "full", dtype="float32")
    assert load_file(str(out / FLOAT_FILE))["embeddings"].dtype == np.float32
    assert json.loads((out / META_FILE).read_text())["dtype"] == "float32"
    np.testing.assert_array_equal(load_student(out).table, table)


def test_int8_is_quantised_from_the_float32_table_whatever_the_dtype(tmp_path, tokenizer, table):
    half = export_static(table, tokenizer, tmp_path / "half", int8=True)
    full = export_static(table, tokenizer, tmp_path / "full", int8=True, dtype="float32")
    a, b = (load_file(str(p / INT8_FILE)) for p in (half, full))
    np.testing.assert_array_equal(a["embeddings_int8"], b["embeddings_int8"])
    np.testing.assert_array_equal(a["scales"], b["scales"])
    only = export_static(table, tokenizer, tmp_path / "only", int8=True, keep_float32=False)
    assert json.loads((only / META_FILE).read_text())["dtype"] is None
    assert not (only / FLOAT_FILE).exists()


def test_unknown_dtype_and_float16_overflow_are_refused_before_writing(tmp_path, tokenizer, table):
    with pytest.raises(ValueError, match=r"dtype='bfloat16'; expected one of"):
        export_static(table, tokenizer, tmp_path / "a", dtype="bfloat16")
    big = table.copy()
    big[3, 2] = 1e5
    with pytest.raises(ValueError, match=r"holds 100000, beyond float16.*dtype='float32'"):
        export_static(big, tokenizer, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    export_static(big, tokenizer, tmp_path / "b", dtype="float32")  # float32 holds it


def test_model_adapter_save_takes_the_dtype(tiny_models, tmp_path, sentences):
    adapter = ModelAdapter(tiny_models("bert"), target_dim=8)
    half = adapter.save(tmp_path / "half")
    full = adapter.save(tmp_path / "full", dtype="float32")
    assert load_file(str(half / FLOAT_FILE))["embeddings"].dtype == np.float16
    np.testing.assert_array_equal(ModelAdapter.load(full).table, adapter.table)
    loaded = ModelAdapter.load(half)
    error = np.abs(loaded.table - adapter.table).max(axis=1)
    assert np.all(error <= EPS16 * np.linalg.norm(adapter.table, axis=1))
    cosines = _cosines(loaded.adapt(sentences), adapter.adapt(sentences))
    assert cosines.min() >= 0.9999
