"""embres: embedding research on pretrained language models, in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="embres",
    version="0.1.0",
    description="Extract, compress, adapt and distil the embedding layers of pretrained models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["embres", "embres.*"]),
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        # < 5.4: what the [test] extra's model2vec[distill] admits, so that
        # `pip install -e .` and then `pip install -e ".[test]"` resolve one set of versions.
        # Without the cap the first resolves transformers 5.25 (which brings `kernels`), the
        # second downgrades it to 5.3 and leaves `kernels` behind, and building a model fails
        # in transformers' hub_kernels ("Either a revision or a version must be specified").
        "transformers>=4.45,<5.4",
        "tokenizers>=0.20",
        "safetensors>=0.4.3",
        "huggingface_hub",
        "numpy",
        "absl-py",
        "ml_collections",
        "tqdm",
        "tensorboardX",
        "matplotlib",
        "scipy",
    ],
    extras_require={
        # TFDS reads nothing without TensorFlow; the CPU build is enough for data.
        "tfds": ["tensorflow-cpu>=2.16", "tensorflow-datasets>=4.9"],
        "test": [
            # Our machines' pip finds this release's CPU build (2.13.0+cpu) in a local wheel
            # folder; on a plain PyPI index the pin takes the CUDA build on Linux x86_64, so
            # install the CPU build first there (README, "Set-up").
            "torch==2.13.0",
            "sentence-transformers",
            # [distill]: notebooks/03 distils a Model2Vec peer (skeletoken, transformers < 5.4)
            "model2vec[distill]",
            "pytest",
            "pytest-timeout",
            "pytest-xdist>=3.2",  # pytest.ini runs the suite on two workers (worksteal: 3.2+)
            "chex",
            "ruff",
            # CI executes notebooks/ (nbconvert brings the `jupyter nbconvert` command)
            "nbconvert",
            "nbclient",
            "ipykernel",
            "tensorflow-cpu>=2.16",
            "tensorflow-datasets>=4.9",
        ],
        # What notebooks/ need beyond embres (Colab has torch already; elsewhere install the
        # torch wheel you want first; [test] pins torch==2.13.0).
        "notebooks": [
            "matplotlib",
            "ipykernel",
            "nbconvert",
            "nbclient",
            "model2vec[distill]",
            "sentence-transformers",
        ],
    },
)
