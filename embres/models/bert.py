"""BERT-family encoder (BERT, MiniLM, and the RoBERTa/XLM-R layout via ``position_style``).

Parameters are a plain pytree whose names mirror the Hugging Face layout, so ``KEY_MAP`` is a
short table. Linear weights in PyTorch are (out, in) and are transposed on load.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from embres.models import layers


@dataclasses.dataclass(frozen=True)
class Config:
    """Shape and numerics of a BERT-style encoder."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    # "absolute": positions 0..L-1 (BERT). "roberta": positions count real tokens and start at
    # pad_token_id + 1, as in RoBERTa and XLM-R.
    position_style: str = "absolute"
    model_type: str = "bert"

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> Config:
        """Builds the config from a Hugging Face ``config.json`` dict."""
        pet = hf.get("position_embedding_type", "absolute") or "absolute"
        if pet != "absolute":
            raise ValueError(
                f"position_embedding_type={pet!r} is not supported; embres ports 'absolute' only"
            )
        model_type = hf.get("model_type", "bert")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_positions=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_act=hf.get("hidden_act", "gelu"),
            pad_token_id=hf.get("pad_token_id", 0) or 0,
            position_style="roberta" if model_type in ("roberta", "xlm-roberta") else "absolute",
            model_type=model_type,
        )

    def to_hf_config(self) -> dict[str, Any]:
        """The inverse of :meth:`from_hf_config`, for export."""
        return {
            "model_type": self.model_type,
            "architectures": [
                "XLMRobertaModel" if self.position_style == "roberta" else "BertModel"
            ],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_positions,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
        }

    @property
    def max_length(self) -> int:
        """Longest token sequence the position table allows."""
        if self.position_style == "roberta":
            return self.max_positions - self.pad_token_id - 1
        return self.max_positions


def flops_per_token(config: Config, length: int = 16) -> int:
    """FLOPs per token of one encoder forward over sequences of ``length`` tokens.

    A multiply-add counts as 2 FLOPs. Per layer and token: the Q, K, V and output
    projections (``4 d^2`` multiply-adds), the FFN (``2 d f``) and attention's score and
    context matmuls (``2 L d``: each token's query meets ``L`` keys, and ``L`` values are
    mixed back). The embedding lookup, LayerNorms, biases, softmax and activations are not
    counted (a few percent at real widths); nor is any head. XLM-R shares this encoder.

    Args:
      config: the encoder's shape.
      length: tokens per sequence (the attention terms grow with it).

    Returns:
      FLOPs per token, an integer.
    """
    d, f, n = config.hidden_size, config.intermediate_size, config.num_layers
    return n * 2 * (4 * d * d + 2 * d * f + 2 * length * d)


def position_ids_for(
    config: Config, input_ids: jax.Array, attention_mask: jax.Array | None = None
) -> jax.Array:
    """Position ids as the reference computes them for this layout."""
    if config.position_style == "roberta":
        # RoBERTa counts only non-pad tokens, starting after padding_idx, and gives pads
        # padding_idx; so padding may sit anywhere, left or right. Masked positions count as
        # pads too, whatever id they hold.
        real = input_ids != config.pad_token_id
        if attention_mask is not None:
            real = real & attention_mask.astype(bool)
        real = real.astype(jnp.int32)
        return jnp.cumsum(real, axis=-1) * real + config.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)


class EncoderLayer(nn.Module):
    """Post-LayerNorm transformer block."""

    config: Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, hidden_states: jax.Array, mask: layers.AttentionMask) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = layers.SelfAttention(
            cfg.num_heads, cfg.hidden_size, attention=self.attention, name="attention", **kw
        )
        attn_out = nn.Dense(cfg.hidden_size, name="attention_output", **kw)(
            attn(hidden_states, mask)
        )
        hidden_states = layers.LayerNorm(cfg.layer_norm_eps, name="attention_norm", **kw)(
            attn_out + hidden_states
        )
        inner = layers.activation(cfg.hidden_act)(
            nn.Dense(cfg.intermediate_size, name="intermediate", **kw)(hidden_states)
        )
        out = nn.Dense(cfg.hidden_size, name="output", **kw)(inner)
        return layers.LayerNorm(cfg.layer_norm_eps, name="output_norm", **kw)(out + hidden_states)


class Encoder(nn.Module):
    """BERT/XLM-R encoder returning the last (and optionally every) hidden state.

    ``inputs_embeds`` replaces the word-embedding lookup (position and token-type embeddings
    are still added), which is how an adapter stands in for the input table.
    ``num_layers`` stops early: layer k of a 12-layer model costs k layers, not 12.
    ``right_padded=True`` promises that every ``attention_mask`` row is ones then zeros (as
    ``embres.tokenize`` pads): attention then takes sequence lengths, the form cuDNN runs
    fast; a left-padded mask passed with it gives wrong vectors (see
    ``layers.AttentionMask.from_padding``). ``attention`` picks the implementation (see
    ``embres.models.layers``).
    """

    config: Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        num_layers: int | None = None,
        right_padded: bool = False,
    ) -> dict[str, Any]:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if attention_mask is None:  # no padding: every row is trivially a prefix
            attention_mask, right_padded = jnp.ones_like(input_ids), True
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        # Pads become the config's pad id (a real row: Hugging Face requires it), so the lookup
        # stays in the table and RoBERTa positions skip them, whatever id the caller padded with.
        input_ids = layers.pad_ids(
            input_ids, attention_mask, layers.valid_id(cfg.pad_token_id, cfg.vocab_size)
        )
        word = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings", **kw)
        if inputs_embeds is None:
            inputs_embeds = word(input_ids)
        inputs_embeds = layers.zero_padding(inputs_embeds, attention_mask)
        positions = nn.Embed(cfg.max_positions, cfg.hidden_size, name="position_embeddings", **kw)
        types = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings", **kw)
        embeddings = (
            inputs_embeds.astype(self.dtype)
            + positions(position_ids_for(cfg, input_ids, attention_mask))
            + types(token_type_ids)
        )
        hidden_states = layers.LayerNorm(cfg.layer_norm_eps, name="embeddings_norm", **kw)(
            embeddings
        )
        mask = layers.AttentionMask.from_padding(attention_mask, False, right_padded)
        all_states = [hidden_states]
        depth = cfg.num_layers if num_layers is None else num_layers
        for i in range(cfg.num_layers):
            if i >= depth:
                break
            layer = EncoderLayer(cfg, attention=self.attention, name=f"layer_{i}", **kw)
            hidden_states = layer(hidden_states, mask)
            all_states.append(hidden_states)
        return {
            "last_hidden_state": hidden_states,
            "hidden_states": tuple(all_states) if output_hidden_states else None,
        }


_L = r"(?:bert\.|roberta\.|model\.)?encoder\.layer\.(\d+)\."
_E = r"(?:bert\.|roberta\.|model\.)?embeddings\."

# (Hugging Face key regex, embres path template, transform). "T" transposes a Linear weight.
KEY_MAP: list[tuple[str, str, str | None]] = [
    (_E + r"word_embeddings\.weight", "word_embeddings/embedding", None),
    (_E + r"position_embeddings\.weight", "position_embeddings/embedding", None),
    (_E + r"token_type_embeddings\.weight", "token_type_embeddings/embedding", None),
    (_E + r"LayerNorm\.(?:weight|gamma)", "embeddings_norm/scale", None),
    (_E + r"LayerNorm\.(?:bias|beta)", "embeddings_norm/bias", None),
    (_L + r"attention\.self\.(query|key|value)\.weight", "layer_{0}/attention/{1}/kernel", "T"),
    (_L + r"attention\.self\.(query|key|value)\.bias", "layer_{0}/attention/{1}/bias", None),
    (_L + r"attention\.output\.dense\.weight", "layer_{0}/attention_output/kernel", "T"),
    (_L + r"attention\.output\.dense\.bias", "layer_{0}/attention_output/bias", None),
    (
        _L + r"attention\.output\.LayerNorm\.(?:weight|gamma)",
        "layer_{0}/attention_norm/scale",
        None,
    ),
    (_L + r"attention\.output\.LayerNorm\.(?:bias|beta)", "layer_{0}/attention_norm/bias", None),
    (_L + r"intermediate\.dense\.weight", "layer_{0}/intermediate/kernel", "T"),
    (_L + r"intermediate\.dense\.bias", "layer_{0}/intermediate/bias", None),
    (_L + r"output\.dense\.weight", "layer_{0}/output/kernel", "T"),
    (_L + r"output\.dense\.bias", "layer_{0}/output/bias", None),
    (_L + r"output\.LayerNorm\.(?:weight|gamma)", "layer_{0}/output_norm/scale", None),
    (_L + r"output\.LayerNorm\.(?:bias|beta)", "layer_{0}/output_norm/bias", None),
]

# Keys a checkpoint may carry that an embedding model does not use (heads, buffers, pooler).
IGNORED_KEYS: list[str] = [
    r".*embeddings\.position_ids",
    r"(?:bert\.|roberta\.|model\.)?pooler\..*",
    r"cls\..*",
    r"lm_head\..*",
    r"classifier\..*",
]

TABLE_PATH = "word_embeddings/embedding"
