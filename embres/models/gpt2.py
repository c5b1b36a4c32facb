"""GPT-2: a causal pre-LayerNorm decoder with learned positions.

Hugging Face stores GPT-2's projections as ``Conv1D`` whose weights are already (in, out), so
they copy without a transpose. The last entry of ``hidden_states`` has the final LayerNorm
applied, exactly as in the reference.
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
    """Shape and numerics of a GPT-2 decoder."""

    vocab_size: int = 50257
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 1024
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu_new"
    pad_token_id: int = 50256
    model_type: str = "gpt2"

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> Config:
        """Builds the config from a Hugging Face GPT-2 ``config.json`` dict."""
        n_embd = hf["n_embd"]
        vocab_size = hf["vocab_size"]
        # GPT-2 has no pad token; its end-of-text token pads, and the mask hides it. A
        # GPT-2-family checkpoint with its own smaller tokenizer often keeps GPT-2's
        # eos_token_id=50256, past its table: then any row will do, and 0 always exists.
        pad = next(
            (
                int(i)
                for i in (hf.get("pad_token_id"), hf.get("eos_token_id", 50256))
                if isinstance(i, int) and 0 <= i < vocab_size
            ),
            0,
        )
        return cls(
            vocab_size=vocab_size,
            hidden_size=n_embd,
            num_layers=hf["n_layer"],
            num_heads=hf["n_head"],
            intermediate_size=hf.get("n_inner") or 4 * n_embd,
            max_positions=hf["n_positions"],
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            hidden_act=hf.get("activation_function", "gelu_new"),
            pad_token_id=pad,
        )

    def to_hf_config(self) -> dict[str, Any]:
        """The inverse of :meth:`from_hf_config`, for export."""
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2Model"],
            "vocab_size": self.vocab_size,
            "n_embd": self.hidden_size,
            "n_layer": self.num_layers,
            "n_head": self.num_heads,
            "n_inner": self.intermediate_size,
            "n_positions": self.max_positions,
            "layer_norm_epsilon": self.layer_norm_eps,
            "activation_function": self.hidden_act,
            "pad_token_id": self.pad_token_id,
        }

    @property
    def max_length(self) -> int:
        """Longest token sequence the position table allows."""
        return self.max_positions


def flops_per_token(config: Config, length: int = 16) -> int:
    """FLOPs per token of one decoder forward over sequences of ``length`` tokens.

    A multiply-add counts as 2 FLOPs. Per layer and token: ``c_attn`` (Q, K, V) and
    ``c_proj`` (``4 d^2`` multiply-adds), the MLP (``2 d f``), and attention's score and
    context matmuls counted over the full ``L x L`` square (``2 L d``), as the compiled
    attention computes them: the causal mask hides the upper half after the matmul, it
    does not skip it (a kernel that skips masked blocks does about half that term). The
    embedding lookups, LayerNorms, biases, softmax, activations and the LM head are not
    counted.

    Args:
      config: the decoder's shape.
      length: tokens per sequence (the attention terms grow with it).

    Returns:
      FLOPs per token, an integer.
    """
    d, f, n = config.hidden_size, config.intermediate_size, config.num_layers
    return n * 2 * (4 * d * d + 2 * d * f + 2 * length * d)


def position_ids_for(config: Config, attention_mask: jax.Array) -> jax.Array:
    """Positions that count real tokens, so left-padded rows start at 0 like unpadded ones."""
    del config
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


class Block(nn.Module):
    """Pre-LayerNorm causal block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    config: Config
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, hidden_states: jax.Array, mask: layers.AttentionMask) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        head_dim = cfg.hidden_size // cfg.num_heads
        x = layers.LayerNorm(cfg.layer_norm_eps, name="ln_1", **kw)(hidden_states)
        qkv = nn.Dense(3 * cfg.hidden_size, name="c_attn", **kw)(x)
        q, k, v = (
            t.reshape(t.shape[:2] + (cfg.num_heads, head_dim)) for t in jnp.split(qkv, 3, axis=-1)
        )
        context = layers.attend(q, k, v, mask, self.attention)
        context = context.reshape(context.shape[:2] + (cfg.hidden_size,))
        hidden_states = hidden_states + nn.Dense(cfg.hidden_size, name="c_proj", **kw)(context)
        x = layers.LayerNorm(cfg.layer_norm_eps, name="ln_2", **kw)(hidden_states)
        x = layers.activation(cfg.hidden_act)(nn.Dense(cfg.intermediate_size, name="c_fc", **kw)(x))
        return hidden_states + nn.Dense(cfg.hidden_size, name="mlp_proj", **kw)(x)


class Decoder(nn.Module):
    """GPT-2 returning the last (and optionally every) hidden state; see ``bert.Encoder``
    (``right_padded`` and ``attention`` included: attention here is causal)."""

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
        position_ids: jax.Array | None = None,
        right_padded: bool = False,
    ) -> dict[str, Any]:
        del token_type_ids  # GPT-2 has none; accepted so every family shares one signature.
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if attention_mask is None:  # no padding: every row is trivially a prefix
            attention_mask, right_padded = jnp.ones_like(input_ids), True
        if position_ids is None:
            position_ids = position_ids_for(cfg, attention_mask)
        input_ids = layers.pad_ids(
            input_ids, attention_mask, layers.valid_id(cfg.pad_token_id, cfg.vocab_size)
        )
        wte = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="wte", **kw)
        if inputs_embeds is None:
            inputs_embeds = wte(input_ids)
        inputs_embeds = layers.zero_padding(inputs_embeds, attention_mask)
        wpe = nn.Embed(cfg.max_positions, cfg.hidden_size, name="wpe", **kw)
        hidden_states = inputs_embeds.astype(self.dtype) + wpe(position_ids)
        mask = layers.AttentionMask.from_padding(attention_mask, True, right_padded)
        all_states = [hidden_states]
        depth = cfg.num_layers if num_layers is None else num_layers
        for i in range(depth):
            block = Block(cfg, attention=self.attention, name=f"h_{i}", **kw)
            hidden_states = block(hidden_states, mask)
            if i < depth - 1:
                all_states.append(hidden_states)
        ln_f = layers.LayerNorm(cfg.layer_norm_eps, name="ln_f", **kw)
        if depth == cfg.num_layers:
            # As in the reference, the final LayerNorm belongs to the last layer's output.
            hidden_states = ln_f(hidden_states)
        if depth > 0:
            all_states.append(hidden_states)
        return {
            "last_hidden_state": hidden_states,
            "hidden_states": tuple(all_states) if output_hidden_states else None,
        }


_P = r"(?:transformer\.)?"
_H = _P + r"h\.(\d+)\."

KEY_MAP: list[tuple[str, str, str | None]] = [
    (_P + r"wte\.weight", "wte/embedding", None),
    (_P + r"wpe\.weight", "wpe/embedding", None),
    (_H + r"ln_(1|2)\.weight", "h_{0}/ln_{1}/scale", None),
    (_H + r"ln_(1|2)\.bias", "h_{0}/ln_{1}/bias", None),
    (_H + r"attn\.c_attn\.weight", "h_{0}/c_attn/kernel", None),
    (_H + r"attn\.c_attn\.bias", "h_{0}/c_attn/bias", None),
    (_H + r"attn\.c_proj\.weight", "h_{0}/c_proj/kernel", None),
    (_H + r"attn\.c_proj\.bias", "h_{0}/c_proj/bias", None),
    (_H + r"mlp\.c_fc\.weight", "h_{0}/c_fc/kernel", None),
    (_H + r"mlp\.c_fc\.bias", "h_{0}/c_fc/bias", None),
    (_H + r"mlp\.c_proj\.weight", "h_{0}/mlp_proj/kernel", None),
    (_H + r"mlp\.c_proj\.bias", "h_{0}/mlp_proj/bias", None),
    (_P + r"ln_f\.weight", "ln_f/scale", None),
    (_P + r"ln_f\.bias", "ln_f/bias", None),
]

# Old checkpoints carry the causal mask as buffers; the LM head is tied to wte.
IGNORED_KEYS: list[str] = [r".*attn\.(?:masked_)?bias", r"lm_head\..*"]

TABLE_PATH = "wte/embedding"
