"""One measurement of ``bench/gpu.sh``, in its own process: ``python bench/gpu.py SECTION ...``.

Sections (each prints one JSON line and, with ``--json``, writes it):

* ``matmul``: the bf16 matmul ceiling of the device (FLOP/s), what MFU is measured against.
* ``forward --shape bert-base|minilm|gpt2 --impl embres|hf``: random-weight forward passes,
  seq ``--seq`` x batch ``--batch``, tokens/s and MFU. ``hf`` times Hugging Face PyTorch
  eager and sdpa attention in the same process (the same weights).
* ``e2e --impl embres|st``: all-MiniLM-L6-v2 end to end (tokenise, forward, pool,
  normalise) on ``--sentences`` STS-B-like sentences (STS-B dev repeated), embres against
  sentence-transformers at the same dtype and batch size.
* ``train``: ``configs/lowrank.py`` training steps/s and MFU (evaluations off).

MFU counts the model's FLOPs per token (2 x non-embedding weights + 4 x layers x seq x
width for attention) against the matmul ceiling measured in the same process. Peers that
are not installed are reported as skipped, never guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Hugging Face config dicts of the shapes measured (random weights: nothing is downloaded).
SHAPES = {
    "bert-base": {
        "model_type": "bert",
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    },
    "minilm": {
        "model_type": "bert",
        "vocab_size": 30522,
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    },
    "gpt2": {
        "model_type": "gpt2",
        "vocab_size": 50257,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_positions": 1024,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
    },
}
SECTIONS = ("matmul", "forward", "e2e", "train")


def flops_per_token(hf: dict, seq: int) -> float:
    """Forward FLOPs per token of a config dict at ``seq`` tokens: its family's count
    (``embres.models.<family>.flops_per_token``: 2 x non-embedding weights + attention's
    4 x layers x seq x width)."""
    from embres.models import FAMILIES

    family = FAMILIES[hf["model_type"]]
    return float(family.flops_per_token(family.Config.from_hf_config(hf), seq))


def best_rate(run, work: float, repeats: int) -> float:
    """``work`` per second of the fastest of ``repeats`` timed calls of ``run`` (warm)."""
    run()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return work / min(times)


def peak_flops(args) -> float:
    """``--peak`` (the matmul section's ceiling: one yardstick for every row), else measured."""
    if args.peak:
        return args.peak
    import jax

    from embres.metrics import matmul_peak

    return matmul_peak(jax.devices()[0], n=args.matmul_n)


# ----------------------------------------------------------------------------- sections


def section_matmul(args) -> dict:
    import jax

    return {"device": str(jax.devices()[0].device_kind), "bf16_matmul_flops": peak_flops(args)}


def section_forward(args) -> dict:
    hf = dict(SHAPES[args.shape])
    if args.layers:
        hf["num_hidden_layers" if "num_hidden_layers" in hf else "n_layer"] = args.layers
    tokens = args.batch * args.seq
    work = flops_per_token(hf, args.seq) * tokens
    result = {"shape": args.shape, "batch": args.batch, "seq": args.seq}
    if args.impl == "embres":
        result.update(_embres_forward(hf, args, tokens, work))
    else:
        result.update(_hf_forward(hf, args, tokens, work))
    return result


def _embres_forward(hf: dict, args, tokens: int, work: float) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from embres.models import FAMILIES, MODULE_CLASSES

    family = FAMILIES[hf["model_type"]]
    config = family.Config.from_hf_config(hf)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    module = MODULE_CLASSES[family](config, dtype=dtype)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, config.vocab_size, (args.batch, args.seq)), jnp.int32)
    lengths = rng.integers(args.seq // 2, args.seq + 1, args.batch)
    mask = jnp.asarray(np.arange(args.seq)[None] < lengths[:, None], jnp.int32)  # right-padded
    params = jax.jit(module.init)(jax.random.PRNGKey(0), ids[:1], mask[:1])
    forward = jax.jit(lambda p, i, m: module.apply(p, i, m, right_padded=True)["last_hidden_state"])
    rate = best_rate(lambda: forward(params, ids, mask).block_until_ready(), 1.0, args.repeats)
    peak = peak_flops(args)
    return {
        "impl": "embres",
        "dtype": args.dtype,
        "tokens_per_s": tokens * rate,
        "mfu": work * rate / peak,
        "peak_flops": peak,
    }


def _hf_forward(hf: dict, args, tokens: int, work: float) -> dict:
    try:
        import torch
        import transformers
    except ImportError as e:
        return {"impl": "hf", "skipped": f"{e.name} is not installed"}
    if not torch.cuda.is_available() and not args.allow_cpu:
        return {"impl": "hf", "skipped": "torch sees no CUDA device"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, hf["vocab_size"], (args.batch, args.seq), generator=gen).to(device)
    lengths = torch.randint(args.seq // 2, args.seq + 1, (args.batch,), generator=gen)
    mask = (torch.arange(args.seq)[None] < lengths[:, None]).long().to(device)
    peak = args.peak or _torch_matmul_peak(torch, device, args)
    out = {"impl": "hf", "dtype": args.dtype, "torch": torch.__version__, "peak_flops": peak}
    for attention in ("eager", "sdpa"):
        config = transformers.AutoConfig.for_model(**hf, attn_implementation=attention)
        model = transformers.AutoModel.from_config(config).to(device, dtype).eval()

        def run(model=model):
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)
            if device == "cuda":
                torch.cuda.synchronize()

        rate = best_rate(run, 1.0, args.repeats)
        out[f"{attention}_tokens_per_s"] = tokens * rate
        out[f"{attention}_mfu"] = work * rate / peak
        del model
    return out


def _torch_matmul_peak(torch, device: str, args) -> float:
    n = args.matmul_n
    x = torch.ones((n, n), dtype=torch.bfloat16, device=device)

    def run():
        x @ x
        if device == "cuda":
            torch.cuda.synchronize()

    return best_rate(run, 2.0 * n**3, max(args.repeats, 3))


def sentences(count: int) -> list[str]:
    """STS-B dev sentences repeated to ``count`` (synthetic ones when the data is absent)."""
    data = Path(os.environ.get("EMBRES_DATA_DIR", REPO.parent / "shared" / "data"))
    found = sorted((data / "stsb").glob("*dev*")) if (data / "stsb").is_dir() else []
    base: list[str] = []
    for path in found[:1]:
        for line in path.read_text(encoding="utf-8").splitlines()[1:]:
            base += [c for c in line.split("\t") if any(ch.isalpha() for ch in c)][:2]
    if not base:
        words = "a man woman plays guitar on the street while people watch dog runs".split()
        base = [" ".join(words[(i + j) % len(words)] for j in range(6 + i % 9)) for i in range(97)]
    return [base[i % len(base)] for i in range(count)]


def section_e2e(args) -> dict:
    texts = sentences(args.sentences)
    result = {"impl": args.impl, "sentences": len(texts), "batch": args.batch}
    if args.impl == "embres":
        from embres import EmbeddingExtractor

        try:
            extractor = EmbeddingExtractor(
                "all-MiniLM-L6-v2", dtype=args.dtype, batch_size=args.batch
            )
        except ValueError as e:  # the bundled model is not installed
            return {**result, "skipped": str(e).split(".")[0]}
        run = lambda: extractor.extract_embeddings(texts)  # noqa: E731
    else:
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            from embres.models import resolve
        except ImportError as e:
            return {**result, "skipped": f"{e.name} is not installed"}
        try:
            path = resolve("all-MiniLM-L6-v2", allow_download=False)
        except ValueError as e:
            return {**result, "skipped": str(e).split(".")[0]}
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = SentenceTransformer(str(path), device=device)
        if args.dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        run = lambda: model.encode(texts, batch_size=args.batch, normalize_embeddings=True)  # noqa: E731
    result["sentences_per_s"] = best_rate(run, len(texts), args.repeats)
    return result


def section_train(args) -> dict:
    import importlib.util

    import ml_collections

    from embres import train

    spec = importlib.util.spec_from_file_location("lowrank", REPO / "configs" / "lowrank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("runlocal" if args.smoke else None)
    config.total_steps = args.steps
    config.log_every_steps = max(1, args.steps // 2)
    config.checkpoint.every_steps = args.steps
    config.optimizer.warmup_steps = 0
    config.evals = ml_collections.ConfigDict()
    config.export = False
    workdir = Path(args.workdir or f"/tmp/embres_gpu_bench_train_{os.getpid()}")
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "examples_per_s" in r]
    last = logged[-1] if logged else {}
    return {
        "config": "configs/lowrank.py",
        "steps": args.steps,
        "batch": config.batch_size,
        "steps_per_s": last.get("examples_per_s", 0.0) / config.batch_size,
        "mfu": last.get("mfu"),
        "wall_s": wall,
    }


# ----------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    from embres import cli

    p = cli.ArgumentParser(prog="bench/gpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("section", choices=SECTIONS)
    p.add_argument("--shape", choices=sorted(SHAPES), default="bert-base")
    p.add_argument("--impl", default="embres", help="embres | hf (forward) | st (e2e)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=0, help="fewer layers (smoke runs)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--sentences", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--matmul-n", type=int, default=8192)
    p.add_argument("--peak", type=float, help="FLOP/s MFU is measured against (default: measure)")
    p.add_argument("--workdir", help="train: where the run goes (default: a /tmp folder)")
    p.add_argument("--smoke", action="store_true", help="train: the runlocal config")
    p.add_argument("--allow-cpu", action="store_true", help="time torch peers on CPU too")
    p.add_argument("--json", help="also write the result here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    impls = {"forward": ("embres", "hf"), "e2e": ("embres", "st")}.get(args.section)
    if impls and args.impl not in impls:
        parser().error(f"--impl {args.impl!r} for {args.section}; expected one of {impls}")
    started = time.perf_counter()
    result = {"section": args.section, **globals()[f"section_{args.section}"](args)}
    result["process_s"] = round(time.perf_counter() - started, 1)
    line = json.dumps(result)
    print(line, flush=True)
    if args.json:
        Path(args.json).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
