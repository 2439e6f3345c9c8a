"""The VLSA model: per-modality embeddings, a shared encoder, a shared decoder, matching heads.

The modules here hold parameters and run the networks; which passes a training
step makes, and which losses it takes, is `vlsa_jax.objective`.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vlsa_jax import masking
from vlsa_jax.models.embeddings import (
    FactorizedPositions,
    PatchEmbedding,
    TextEmbedding,
    masked_mean,
    patchify_audio,
    patchify_video,
    valid_or_ones,
)
from vlsa_jax.modalities import AUDIO, MODALITIES, TEXT, TEXT_IDS, VIDEO, VIDEO_CROP, modalities_of
from vlsa_jax.models.frames import normalize_frames, resize_crops
from vlsa_jax.models.transformer import Stack, StackSpec, dense, layer_norm

GROUPINGS = ("avt", "vt", "at", "av", "none")


def modality_groups(grouping: str) -> tuple[tuple[str, ...], ...]:
    """The modalities that share a stack, e.g. 'vt' -> (('video', 'text'), ('audio',)).

    'none' gives every modality a stack of its own.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping {grouping!r} is not one of {GROUPINGS}")
    shared = () if grouping == "none" else modalities_of(grouping)
    alone = tuple((m,) for m in MODALITIES if m not in shared)
    return ((shared,) if shared else ()) + alone


def global_pairs(config: ml_collections.ConfigDict) -> tuple[tuple[str, str], ...]:
    """The (anchor, other) pairs of the global loss: GAM's audio pairs, VTM's video-text."""
    pairs = ((AUDIO, VIDEO), (AUDIO, TEXT)) if config.loss.gam else ()
    return pairs + (((VIDEO, TEXT),) if config.loss.vtm else ())


def pair_name(pair: tuple[str, str]) -> str:
    """The pair's key in metric names and matching heads, e.g. 'audio_video'."""
    return "_".join(pair)


def encoder_spec(config) -> StackSpec:
    m = config.model
    return StackSpec(
        width=m.width, depth=m.depth, num_heads=m.num_heads, mlp_dim=m.mlp_dim,
        layer_norm_eps=m.layer_norm_eps, qkv_bias=m.qkv_bias, init_std=m.init_std,
        dtype=jnp.dtype(config.dtype), remat_policy=m.remat_policy,
        attention_impl=m.attention_impl)


def decoder_spec(config) -> StackSpec:
    m = config.model
    return StackSpec(
        width=m.decoder_width, depth=m.decoder_depth, num_heads=m.decoder_num_heads,
        mlp_dim=m.decoder_mlp_dim, layer_norm_eps=m.layer_norm_eps, qkv_bias=m.qkv_bias,
        init_std=m.init_std, dtype=jnp.dtype(config.dtype), remat_policy=m.remat_policy,
        attention_impl=m.attention_impl)


def token_grids(config) -> dict[str, tuple[int, ...]]:
    """Token layout per modality: video (frames, patches), audio (time, freq), text (len,)."""
    v, a = config.video, config.audio
    return {
        VIDEO: (v.num_frames, (v.size // v.patch) ** 2),
        AUDIO: (a.frames // a.patch, a.bins // a.patch),
        TEXT: (config.text.max_len,),
    }


def patch_dims(config) -> dict[str, int]:
    """Values per flattened patch: video p*p*3, audio p*p."""
    return {VIDEO: config.video.patch**2 * 3, AUDIO: config.audio.patch**2}


def model_inputs(batch, config) -> dict[str, jax.Array]:
    """Turns batch arrays into encoder inputs: video and audio patches, text ids.

    Frames travel as uint8 (4x less host memory, worker traffic and host-to-device
    transfer) and are normalised here, on the device.

    Args:
      batch: 'video' [B, T, H, W, 3] uint8 RGB at the model's size or, with
        'video_crop' [B, 2] (side, flip), the input pipeline's square canvases, whose
        crops are resized here (models.frames); 'audio' [B, time, freq] float
        (normalised); 'text_ids' [B, L] int (with 'text_mask' [B, L], 1 on real
        tokens). A modality the batch lacks is simply absent.
      config: the run config.

    Returns:
      {modality: input}: video and audio patches [B, N, patch_dim], text ids [B, L].
    """
    inputs = {}
    if VIDEO in batch:
        frames = batch[VIDEO]
        if VIDEO_CROP in batch:
            frames = resize_crops(frames, batch[VIDEO_CROP], config.video.size)
        inputs[VIDEO] = patchify_video(normalize_frames(frames, config.video),
                                       config.video.patch)
    if AUDIO in batch:
        inputs[AUDIO] = patchify_audio(batch[AUDIO], config.audio.patch)
    if TEXT_IDS in batch:
        inputs[TEXT] = batch[TEXT_IDS]
    return inputs


class DecoderInput(nnx.Module):
    """Encoder width -> decoder width, the modality's mask token and decoder positions."""

    def __init__(self, grid, enc: StackSpec, dec: StackSpec, *, rngs: nnx.Rngs):
        self.proj = dense(enc.width, dec.width, ("embed", None), dec, rngs)
        self.mask_token = nnx.Param(
            nnx.with_partitioning(nnx.initializers.normal(dec.init_std), ("embed",))(
                rngs.params(), (dec.width,)))
        self.positions = FactorizedPositions(grid, dec.width, dec, rngs=rngs)

    def __call__(self, encoded, ids_restore):
        """Projects the visible tokens [B, K, D] and puts mask tokens where tokens were dropped.

        Args:
          encoded: [B, K, D] visible tokens.
          ids_restore: [B, N]; None when nothing was dropped.

        Returns:
          [B, N, decoder width] with the decoder's positions.
        """
        x = self.proj(encoded)
        if ids_restore is not None:
            x = masking.restore_tokens(x, self.mask_token[...].astype(x.dtype), ids_restore)
        return x + self.positions().astype(x.dtype)


class MLMHead(nnx.Module):
    """BERT's masked-token head: dense, GELU, LayerNorm, then logits over the vocabulary."""

    def __init__(self, dec: StackSpec, vocab_size: int, *, rngs: nnx.Rngs):
        self.transform = dense(dec.width, dec.width, ("embed", None), dec, rngs)
        self.norm = layer_norm(dec.width, dec, rngs)
        self.logits = dense(dec.width, vocab_size, ("embed", "vocab"), dec, rngs)

    def __call__(self, x):
        return self.logits(self.norm(jax.nn.gelu(self.transform(x), approximate=False)))


class VLSA(nnx.Module):
    """Video-language pre-training with synchronized audio (arXiv 2405.07202).

    Attributes are created only for the parts the config uses: decoders when LPMM
    is on, one matching head per global pair, a temperature when it is learned.
    """

    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        enc, dec = encoder_spec(config), decoder_spec(config)
        grids, dims = token_grids(config), patch_dims(config)
        self.embeddings = nnx.Dict({
            VIDEO: PatchEmbedding(dims[VIDEO], grids[VIDEO], enc, rngs=rngs),
            AUDIO: PatchEmbedding(dims[AUDIO], grids[AUDIO], enc, rngs=rngs),
            TEXT: TextEmbedding(config.text.vocab_size, config.text.max_len, enc, rngs=rngs),
        })
        self.modality_type = nnx.Param(
            nnx.with_partitioning(nnx.initializers.normal(enc.init_std), (None, "embed"))(
                rngs.params(), (len(MODALITIES), enc.width)))
        self.encoder_groups = modality_groups(config.model.joint_modalities)
        self.encoders = nnx.List([Stack(enc, rngs=rngs) for _ in self.encoder_groups])

        if config.loss.lpmm:
            self.decoder_groups = modality_groups(config.model.decoder_sharing)
            self.decoders = nnx.List([Stack(dec, rngs=rngs) for _ in self.decoder_groups])
            self.decoder_inputs = nnx.Dict(
                {m: DecoderInput(grids[m], enc, dec, rngs=rngs) for m in MODALITIES})
            self.heads = nnx.Dict({
                VIDEO: dense(dec.width, dims[VIDEO], ("embed", "patch"), dec, rngs),
                AUDIO: dense(dec.width, dims[AUDIO], ("embed", "patch"), dec, rngs),
                TEXT: MLMHead(dec, config.text.vocab_size, rngs=rngs),
            })

        joint_pass = config.matching.head == "joint_pass"
        self.matching_heads = nnx.Dict({
            pair_name(pair): dense(enc.width * (1 if joint_pass else 4), 1, ("embed", None),
                                   enc, rngs)
            for pair in global_pairs(config)})

        self.learnable_temperature = config.loss.learnable_temperature
        self.fixed_temperature = config.loss.temperature
        if self.learnable_temperature:
            self.log_temperature = nnx.Param(jnp.log(jnp.float32(config.loss.temperature)))

    def tokens(self, modality: str, x):
        """Embeds one modality's input (patches or ids) with its positions and type: [B, N, D]."""
        type_embedding = self.modality_type[MODALITIES.index(modality)]
        out = self.embeddings[modality](x)
        return out + type_embedding.astype(out.dtype)

    def encode(self, inputs: dict[str, tuple[jax.Array, jax.Array | None]]) -> dict[str, jax.Array]:
        """Runs encoder passes: modalities given together that share an encoder see each other.

        Passing one modality is the unimodal pass retrieval uses; passing all three is
        the joint pass of Eq. 3.

        Args:
          inputs: modality -> (tokens [B, N_m, D], valid [B, N_m] bool or None).

        Returns:
          modality -> encoded tokens [B, N_m, D].
        """
        encoded = {}
        for group, encoder in zip(self.encoder_groups, self.encoders):
            members = [m for m in group if m in inputs]
            if members:
                encoded.update(_run_joint(encoder, {m: inputs[m] for m in members}))
        return encoded

    def reconstruct(self, modality: str, encoded, ids_restore, valid):
        """Decodes one modality from its encoded tokens.

        Args:
          modality: 'video', 'audio' or 'text'.
          encoded: [B, K, D] (the visible tokens for video and audio, all for text).
          ids_restore: [B, N], or None (text: masked in place).
          valid: [B, N] bool, or None.

        Returns:
          float32 video/audio patches [B, N, patch_dim] or text logits [B, L, vocab].
        """
        index = next(i for i, g in enumerate(self.decoder_groups) if modality in g)
        x = self.decoder_inputs[modality](encoded, ids_restore)
        x = self.decoders[index](x, valid)
        return self.heads[modality](x).astype(jnp.float32)

    def match_logits(self, pair: tuple[str, str], features):
        """Matching-head logit per example: features [B, F] -> [B] float32."""
        return self.matching_heads[pair_name(pair)](features)[:, 0].astype(jnp.float32)

    def temperature(self):
        """The contrastive temperature: fixed, or learned (as its log)."""
        if self.learnable_temperature:
            # Clamped so a runaway temperature cannot blow the logits up.
            return jnp.maximum(jnp.exp(self.log_temperature[...]), 1e-3)
        return jnp.float32(self.fixed_temperature)

    def global_embeddings(self, inputs, text_valid=None) -> dict[str, jax.Array]:
        """Retrieval embeddings: each modality encoded alone, unmasked, mean-pooled: [B, D]."""
        out = {}
        for modality, x in inputs.items():
            valid = text_valid if modality == TEXT else None
            tokens = self.encode({modality: (self.tokens(modality, x), valid)})[modality]
            out[modality] = masked_mean(tokens, valid)
        return out


def _run_joint(encoder: Stack, inputs):
    """Concatenates the inputs' tokens into one sequence, encodes, splits them back."""
    names = list(inputs)
    tokens = [inputs[m][0] for m in names]
    if all(inputs[m][1] is None for m in names):
        valid = None
    else:
        valid = jnp.concatenate([valid_or_ones(*inputs[m]) for m in names], axis=1)
    out = encoder(jnp.concatenate(tokens, axis=1), valid)
    splits = np.cumsum([t.shape[1] for t in tokens])[:-1]
    return dict(zip(names, jnp.split(out, splits, axis=1)))


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> VLSA:
    """The VLSA model of `config`, on the default device (shard it by rule afterwards)."""
    # Parameters carry logical axis names, which are not mesh axes: placing them
    # eagerly would fail outside a mesh that defines those names.
    with nnx.use_eager_sharding(False):
        return VLSA(config, rngs=rngs)


def abstract_model(config: ml_collections.ConfigDict) -> VLSA:
    """The model with every array a `jax.ShapeDtypeStruct`: shapes only, no memory."""
    return nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
