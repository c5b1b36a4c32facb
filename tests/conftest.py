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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Builds each distinct tiny Hugging Face checkpoint once per pytest session.

    Signature of the returned function::

        tiny_models(family: str, **options) -> pathlib.Path

    ``family`` is "bert", "xlmr" or "gpt2"; ``options`` are the keyword arguments of
    :func:`embres.testing.tiny_checkpoint` other than ``directory`` (``hidden_size``,
    ``num_layers``, ``num_heads``, ``seed``, ``safe_serialization``, ``max_shard_size``,
    ``pad_token``, ``vocab_size``, ``config_overrides``). The first call with a given family and
    options writes the checkpoint (model + tokenizer) under a session temporary folder; later
    calls with equal arguments (defaults filled in: ``num_layers=2`` is the same as leaving it
    out) return the same directory; an unknown option raises ``TypeError``. The directory is
    shared by every test of the session: treat it as read-only, and copy it
    (``shutil.copytree``) before editing.

    Example::

        def test_something(tiny_models):
            path = tiny_models("gpt2", pad_token=False, num_layers=3)
            model = load_model(path)
    """
    import inspect
    import json

    from embres.testing import tiny_checkpoint

    signature = inspect.signature(tiny_checkpoint)
    built: dict[str, Path] = {}

    def build(family: str, **options) -> Path:
        bound = signature.bind(family, None, **options)
        bound.apply_defaults()
        del bound.arguments["directory"]
        key = json.dumps(bound.arguments, sort_keys=True, default=repr)
        if key not in built:
            directory = tmp_path_factory.mktemp(f"tiny_{family}") / "model"
            built[key] = tiny_checkpoint(family, directory, **options)
        return built[key]

    return build
