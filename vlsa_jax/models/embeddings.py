"""Patchification and the per-modality token embeddings of the encoder input."""
import einops
import jax.numpy as jnp
from flax import nnx

from vlsa_jax.models.transformer import StackSpec, dense, layer_norm


def patchify_video(frames, patch: int):
    """Cuts frames [B, T, H, W, C] into patches [B, T*(H/p)*(W/p), p*p*C], frame-major."""
    return einops.rearrange(
        frames, "b t (h p1) (w p2) c -> b (t h w) (p1 p2 c)", p1=patch, p2=patch)


def patchify_audio(spectrogram, patch: int):
    """Cuts a spectrogram [B, time, freq] into patches [B, (time/p)*(freq/p), p*p], time-major."""
    return einops.rearrange(
        spectrogram, "b (t p1) (f p2) -> b (t f) (p1 p2)", p1=patch, p2=patch)


class FactorizedPositions(nnx.Module):
    """Learned positions on a grid: one table per axis, summed (e.g. frame + spatial).

    For grid (T, P) the position of token t*P + p is row_t + col_p, which is how
    video (frames x patches) and audio (time x frequency) tokens are laid out.
    """

    def __init__(self, grid: tuple[int, ...], dim: int, spec: StackSpec, *, rngs: nnx.Rngs):
        init = nnx.with_partitioning(nnx.initializers.normal(spec.init_std), ("positions", "embed"))
        self.tables = nnx.List([nnx.Param(init(rngs.params(), (n, dim))) for n in grid])
        self.grid = grid

    def __call__(self):
        """Returns [prod(grid), dim]."""
        total = 0.0
        for axis, table in enumerate(self.tables):
            shape = [1] * len(self.grid) + [table.shape[-1]]
            shape[axis] = self.grid[axis]
            total = total + table[...].reshape(shape)
        return total.reshape(-1, total.shape[-1])


class PatchEmbedding(nnx.Module):
    """Linear projection of flattened patches plus grid positions (video, audio)."""

    def __init__(self, patch_dim: int, grid: tuple[int, ...], spec: StackSpec, *, rngs):
        self.proj = dense(patch_dim, spec.width, ("patch", "embed"), spec, rngs)
        self.positions = FactorizedPositions(grid, spec.width, spec, rngs=rngs)

    def __call__(self, patches):
        """Embeds patches [B, N, patch_dim] as tokens [B, N, D]."""
        return self.proj(patches) + self.positions().astype(self.proj.dtype)


class TextEmbedding(nnx.Module):
    """BERT-style word + position embeddings, then LayerNorm."""

    def __init__(self, vocab_size: int, max_len: int, spec: StackSpec, *, rngs: nnx.Rngs):
        self.words = nnx.Embed(
            vocab_size, spec.width, dtype=spec.dtype, rngs=rngs,
            embedding_init=nnx.with_partitioning(
                nnx.initializers.normal(spec.init_std), ("vocab", "embed")))
        self.positions = FactorizedPositions((max_len,), spec.width, spec, rngs=rngs)
        self.norm = layer_norm(spec.width, spec, rngs)

    def __call__(self, token_ids):
        """Embeds token ids [B, L] int as tokens [B, L, D]."""
        return self.norm(self.words(token_ids) + self.positions().astype(self.words.dtype))


def masked_mean(tokens, valid):
    """Mean over valid tokens: tokens [B, N, D], valid [B, N] bool or None -> [B, D] float32."""
    tokens = tokens.astype(jnp.float32)
    if valid is None:
        return tokens.mean(axis=1)
    weights = valid.astype(jnp.float32)[..., None]
    return (tokens * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)


def valid_or_ones(tokens, valid):
    """The [B, N] validity of tokens [B, N, D]: `valid`, or all True where it is None."""
    return jnp.ones(tokens.shape[:2], bool) if valid is None else valid
