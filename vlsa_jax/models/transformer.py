"""Pre-LN transformer blocks and a layer stack run under `nnx.scan`.

Every parameter carries logical axis names ('embed', 'mlp', 'heads', 'layers');
`vlsa_jax.sharding` maps them onto the device mesh with the config's rules table, and
the activations between them onto the same axes (`sharding.constrain`).
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vlsa_jax.sharding import BATCH, constrain

# Logical layouts of the activations: tokens [B, S, D], per-head [B, S, H, D/H],
# MLP hidden units [B, S, mlp].
_TOKENS = (BATCH, None, None)
_PER_HEAD = (BATCH, None, "heads", None)
_HIDDEN = (BATCH, None, "mlp")

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_POLICY_NAMES = ("none", *_REMAT_POLICIES)
ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """The shape and numerics of one transformer stack."""

    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    init_std: float = 0.02
    dtype: jnp.dtype = jnp.float32
    remat_policy: str = "none"
    attention_impl: str = "xla"


class Dense(nnx.Linear):
    """`nnx.Linear` whose product accumulates in float32, its output cast to `dtype`.

    Under bfloat16 activations this is the usual mixed precision (bf16 operands, f32
    accumulation and bias), and the form XLA:CPU runs fast: a dot with a bf16 result
    takes its slow path, no faster than float32.
    """

    def __call__(self, x):
        return super().__call__(x).astype(self.dtype)


def dense(in_dim, out_dim, axes, spec: StackSpec, rngs, use_bias=True):
    """A Linear layer whose kernel and bias carry logical axis names."""
    return Dense(
        in_dim, out_dim, use_bias=use_bias, dtype=spec.dtype, rngs=rngs,
        preferred_element_type=jnp.float32,
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(spec.init_std), axes),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[-1],)))


def layer_norm(dim, spec: StackSpec, rngs):
    return nnx.LayerNorm(
        dim, epsilon=spec.layer_norm_eps, dtype=spec.dtype, rngs=rngs,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)))


def dot_product_attention(q, k, v, mask):
    """Softmax attention of q over k and v [B, S, H, D/H], written out for XLA.

    Both products accumulate in float32 and the softmax runs in float32; the output
    has q's dtype. `jax.nn.dot_product_attention`'s XLA path computes the same thing,
    but it maps over a head-group axis that XLA:CPU turns into layout copies: its
    forward and backward over 1,568 tokens take 1.6-1.75x as long as this form's, in
    float32 and in bfloat16 (benchmarks/attention.py).

    Args:
      q, k, v: [B, S, H, D/H].
      mask: [B, 1, 1, S] bool, the keys that may be attended to; None: all of them.

    Returns:
      [B, S, H, D/H].
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32)
    return y.astype(q.dtype)


class Attention(nnx.Module):
    """Multi-head self-attention: `dot_product_attention`, or cuDNN's fused kernel."""

    def __init__(self, spec: StackSpec, *, rngs: nnx.Rngs):
        d = spec.width
        self.num_heads = spec.num_heads
        self.impl = spec.attention_impl
        self.query = dense(d, d, ("embed", "heads"), spec, rngs, spec.qkv_bias)
        self.key = dense(d, d, ("embed", "heads"), spec, rngs, spec.qkv_bias)
        self.value = dense(d, d, ("embed", "heads"), spec, rngs, spec.qkv_bias)
        self.out = dense(d, d, ("heads", "embed"), spec, rngs)

    def __call__(self, x, valid):
        """Self-attention over x [B, S, D].

        Args:
          x: [B, S, D] tokens.
          valid: [B, S] bool, the keys that may be attended to; None: all of them.

        Returns:
          [B, S, D].
        """
        def split(t):
            return constrain(t.reshape(*t.shape[:2], self.num_heads, -1), _PER_HEAD)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        mask = None if valid is None else valid[:, None, None, :]
        if self.impl == "cudnn":
            y = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
        else:
            y = dot_product_attention(q, k, v, mask)
        return self.out(constrain(y, _PER_HEAD).reshape(x.shape))


class Block(nnx.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, spec: StackSpec, *, rngs: nnx.Rngs):
        self.norm1 = layer_norm(spec.width, spec, rngs)
        self.attn = Attention(spec, rngs=rngs)
        self.norm2 = layer_norm(spec.width, spec, rngs)
        self.fc1 = dense(spec.width, spec.mlp_dim, ("embed", "mlp"), spec, rngs)
        self.fc2 = dense(spec.mlp_dim, spec.width, ("mlp", "embed"), spec, rngs)

    def __call__(self, x, valid):
        x = constrain(x, _TOKENS)
        x = x + self.attn(self.norm1(x), valid)
        hidden = constrain(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False), _HIDDEN)
        return constrain(x + self.fc2(hidden), _TOKENS)


class Stack(nnx.Module):
    """`depth` blocks with stacked parameters, run by `nnx.scan` and a final LayerNorm.

    Scanning keeps compile time flat in depth; the remat policy decides what each
    layer keeps for the backward pass.
    """

    def __init__(self, spec: StackSpec, *, rngs: nnx.Rngs):
        if spec.remat_policy not in REMAT_POLICY_NAMES:
            raise ValueError(f"remat_policy {spec.remat_policy!r} not in {REMAT_POLICY_NAMES}")
        self.remat_policy = spec.remat_policy

        @nnx.split_rngs(splits=spec.depth)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs):
            return Block(spec, rngs=rngs)

        self.blocks = make_blocks(rngs)
        self.norm = layer_norm(spec.width, spec, rngs)

    def __call__(self, x, valid=None):
        """Runs the blocks and the final LayerNorm over x [B, S, D].

        Args:
          x: [B, S, D] tokens.
          valid: [B, S] bool, the tokens that may be attended to; None: all of them.

        Returns:
          [B, S, D].
        """

        def apply_block(block, h):
            return block(h, valid)

        if self.remat_policy != "none":
            apply_block = nnx.remat(apply_block, policy=_REMAT_POLICIES[self.remat_policy])

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(h, block):
            return apply_block(block, h)

        return self.norm(run(x, self.blocks))
