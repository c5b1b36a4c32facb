"""Test set-up: 8 fake CPU devices, no network, float32 matmuls, shared data from ../shared."""

import os
from pathlib import Path

# Must happen before jax is imported anywhere.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_default_data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "EMBRES_DATA_DIR" not in os.environ and _default_data.is_dir():
    os.environ["EMBRES_DATA_DIR"] = str(_default_data)

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")
jax.config.update("jax_platforms", "cpu")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests needing it are skipped with a reason when absent."""
    path = os.environ.get("EMBRES_DATA_DIR")
    if not path or not Path(path).is_dir():
        pytest.skip("EMBRES_DATA_DIR is not set to the shared data folder")
    return Path(path)
