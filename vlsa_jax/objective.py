"""The pre-training objective: L = L_local + lambda * L_global (paper Eq. 8).

L_local (LPMM, Eq. 5): one joint pass over the visible video and audio patches and
the BERT-masked text; one decoder reconstructs each modality; MSE on masked
patches, cross-entropy on masked tokens.
L_global (GAM, Eq. 7): per pair (audio-video, audio-text; video-text for VTM),
symmetric InfoNCE over the global batch plus a binary matching head, on global
embeddings whose text is the clean caption, as retrieval embeds it
(`global_sources`).
"""
import functools
import math
from typing import NamedTuple

import einops
import jax
import jax.numpy as jnp
import ml_collections

from vlsa_jax import losses, masking
from vlsa_jax.models.embeddings import masked_mean, valid_or_ones
from vlsa_jax.modalities import AUDIO, TEXT, TEXT_MASK, VIDEO
from vlsa_jax.models.vlsa import (
    VLSA,
    global_pairs,
    model_inputs,
    pair_name,
    token_grids,
)


class MaskedModality(NamedTuple):
    """One modality's encoder input after masking.

    Attributes:
      tokens: [B, K, D] the visible tokens (text: all L, some replaced).
      valid: [B, K] bool; None when every token is real.
      ids_restore: [B, N]; None for text (masked in place).
      loss_mask: [B, N] float32, 1 where the reconstruction loss counts.
    """

    tokens: jax.Array
    valid: jax.Array | None
    ids_restore: jax.Array | None
    loss_mask: jax.Array


def pretraining_loss(model: VLSA, batch, key, config: ml_collections.ConfigDict):
    """Total pre-training loss and its terms for one (global) batch.

    Args:
      model: the VLSA module.
      batch: 'video' [B, T, H, W, 3], 'audio' [B, time, freq], 'text_ids' and
        'text_mask' [B, L]; a modality the dataset lacks is absent, and every term
        that needs it is skipped.
      key: PRNG key of this step (masks and matching negatives).
      config: the run config.

    Returns:
      (loss, metrics): a float32 scalar, and a dict of float32 scalars.
    """
    inputs = model_inputs(batch, config)
    text_valid = batch[TEXT_MASK].astype(bool) if TEXT in inputs else None
    pairs = [p for p in global_pairs(config) if p[0] in inputs and p[1] in inputs]
    mask_key, match_key, desync_key = jax.random.split(key, 3)
    needs_masks = config.loss.lpmm or config.gam.masked_inputs
    masked = mask_modalities(model, inputs, text_valid, mask_key, config) if needs_masks else None

    metrics = {}
    local, joint = jnp.float32(0.0), None
    if config.loss.lpmm:
        local_terms, joint = local_losses(model, masked, inputs, text_valid, config)
        metrics.update({f"local/{m}": v for m, v in local_terms.items()})
        local = sum(local_terms.values())

    global_ = jnp.float32(0.0)
    if pairs:
        sources = global_sources(model, masked, inputs, text_valid, config)
        embeddings = global_embeddings(model, sources, joint, config)
        desynced = {}
        if (AUDIO, VIDEO) in pairs:
            desynced = desynchronised_embeddings(model, batch, inputs, desync_key, config)
        temperature = model.temperature()
        for pair, k in zip(pairs, jax.random.split(match_key, len(pairs))):
            terms = pair_losses(model, pair, embeddings, sources, temperature, k, config,
                                desynced if pair == (AUDIO, VIDEO) else {})
            metrics.update({f"global/{pair_name(pair)}/{n}": v for n, v in terms.items()})
            global_ += terms["nce"] + terms.get("match", 0.0)
        metrics["temperature"] = temperature

    loss = local + config.loss.lambda_global * global_
    metrics.update({"loss": loss, "loss/local": local, "loss/global": global_})
    return loss, metrics


def mask_modalities(model, inputs, text_valid, key, config) -> dict[str, MaskedModality]:
    """Embeds and masks every modality: MAE drop for video (per frame) and audio, BERT for text."""
    grids = token_grids(config)
    keys = dict(zip((VIDEO, AUDIO, TEXT), jax.random.split(key, 3)))
    out = {}
    for modality, x in inputs.items():
        batch_size = x.shape[0]
        if modality == TEXT:
            special = jnp.asarray(config.text.special_token_ids)
            maskable = text_valid & ~jnp.isin(x, special)
            ids, mlm_mask = masking.bert_text_masking(
                keys[TEXT], x, maskable, config.masking.text_ratio,
                config.text.mask_token_id, config.text.vocab_size)
            out[TEXT] = MaskedModality(model.tokens(TEXT, ids), text_valid, None, mlm_mask)
            continue
        if modality == VIDEO:
            info = masking.per_frame_masking(
                keys[VIDEO], batch_size, *grids[VIDEO], config.masking.video_ratio)
        else:
            info = masking.random_masking(
                keys[AUDIO], batch_size, grids[AUDIO][0] * grids[AUDIO][1],
                config.masking.audio_ratio)
        # Embed before dropping so that every kept token carries its own position.
        visible = masking.gather_tokens(model.tokens(modality, x), info.ids_keep)
        out[modality] = MaskedModality(visible, None, info.ids_restore, info.mask)
    return out


def local_losses(model, masked, inputs, text_valid, config):
    """LPMM: one joint pass over all masked modalities, one reconstruction loss each.

    Returns:
      ({modality: loss}, {modality: encoded tokens of the joint pass}).
    """
    joint = model.encode({m: (mm.tokens, mm.valid) for m, mm in masked.items()})
    terms = {}
    for modality, mm in masked.items():
        if modality == TEXT:
            logits = model.reconstruct(TEXT, joint[TEXT], None, text_valid)
            terms[TEXT] = losses.masked_token_cross_entropy(logits, inputs[TEXT], mm.loss_mask)
        else:
            pred = model.reconstruct(modality, joint[modality], mm.ids_restore, None)
            terms[modality] = losses.masked_patch_mse(
                pred, inputs[modality], mm.loss_mask, config.loss.patch_reduction)
    return terms, joint


def global_sources(model, masked, inputs, text_valid, config):
    """Per modality, the (tokens, valid) that the global embeddings are computed from.

    Video and audio: the MAE-visible patches when `gam.masked_inputs` (a quarter of
    the tokens to encode), else every patch. Text: always the clean ids, as retrieval
    embeds captions. BERT masking replaces tokens in place and drops none, so masked
    text would save nothing; it would only train the global loss on captions that
    retrieval never sees.

    Args:
      model: the VLSA module.
      masked: `mask_modalities`' output; read only when `gam.masked_inputs`.
      inputs: {modality: encoder input} (`model_inputs`).
      text_valid: [B, L] bool, or None without text.
      config: the run config.
    """
    sources = {}
    for modality, x in inputs.items():
        if modality == TEXT:
            sources[TEXT] = (model.tokens(TEXT, x), text_valid)
        elif config.gam.masked_inputs:
            sources[modality] = (masked[modality].tokens, None)
        else:
            sources[modality] = (model.tokens(modality, x), None)
    return sources


def global_embeddings(model, sources, joint, config) -> dict[str, jax.Array]:
    """Mean-pooled global embeddings (Eq. 6), [B, D] float32 per modality.

    'unimodal': each modality through the encoder alone, as retrieval sees it.
    'joint': pools of a joint pass. With `gam.masked_inputs` that is the LPMM pass
    itself when there is one (`joint`; Eq. 6 literally: its text is BERT-masked, as
    that pass reads it); otherwise a joint pass of `sources` of its own, so that
    `masked_inputs=False` pools unmasked inputs as it says, at the cost of one more
    joint pass.

    Args:
      model: the VLSA module.
      sources: `global_sources`' output.
      joint: the LPMM pass's encoded tokens by modality, or None without LPMM.
      config: the run config.
    """
    if config.gam.features == "joint":
        reuse = joint is not None and config.gam.masked_inputs
        encoded = joint if reuse else model.encode(sources)
    else:
        encoded = {m: model.encode({m: src})[m] for m, src in sources.items()}
    return {m: masked_mean(encoded[m], sources[m][1]) for m in encoded}


def desynchronised_embeddings(model, batch, inputs, key, config) -> dict[str, jax.Array]:
    """Global embeddings of each clip made out of step with itself, by modality.

    Each altered modality keeps its content and loses its synchrony with the other, and
    is embedded as the global loss embeds that modality (alone, MAE-masked when
    `gam.masked_inputs`):

    * 'audio' (when `gam.shifted_audio_negatives` = (low, high)): the spectrogram's
      interior rotated in time by a whole number of frames, a fraction in [low, high] of
      its length: of `ROTATION_CANDIDATES` random ones, the one whose cut is quietest
      (`quietest_rotation`). The first and last half patch stay in place: a clip's edge
      frames differ from the rest (the window's zero padding, the STFT's edge), and
      moved inside the clip they would give the negative away without any synchrony.
    * 'video' (when `gam.reversed_video_negatives`): the frames in reverse order.

    Args:
      model: the VLSA module.
      batch: the step's batch; its 'audio' is rotated.
      inputs: the batch's own encoder inputs (`model_inputs`), whose video patches are
        reversed as they are: resizing and patching the frames again would only repeat
        that work.
      key: PRNG key (rotations and masks).
      config: the run config.

    Returns:
      {modality: [B, D] float32} for each modality altered.
    """
    shift_key, mask_key = jax.random.split(key)
    altered = {}
    if config.gam.shifted_audio_negatives:
        audio = batch["audio"]
        low, high = config.gam.shifted_audio_negatives
        edge = max(config.audio.patch // 2, 1)
        interior = audio[:, edge:audio.shape[1] - edge]
        frames = interior.shape[1]
        candidates = jax.random.randint(
            shift_key, (audio.shape[0], ROTATION_CANDIDATES), math.ceil(low * frames),
            math.floor(high * frames) + 1)
        shifts = quietest_rotation(interior, candidates, edge)
        rotated = jax.vmap(functools.partial(jnp.roll, axis=0))(interior, shifts)
        altered[AUDIO] = jnp.concatenate(
            [audio[:, :edge], rotated, audio[:, audio.shape[1] - edge:]], axis=1)
    altered = model_inputs(altered, config)
    if config.gam.reversed_video_negatives:
        # Patches are frame-major (embeddings.patchify_video): reverse the frame axis.
        altered[VIDEO] = einops.rearrange(
            einops.rearrange(inputs[VIDEO], "b (t n) d -> b t n d",
                             t=config.video.num_frames)[:, ::-1],
            "b t n d -> b (t n) d")
    masked = (mask_modalities(model, altered, None, mask_key, config)
              if config.gam.masked_inputs else None)
    sources = global_sources(model, masked, altered, None, config)
    return global_embeddings(model, sources, None, config)


# Rotations drawn per clip for `quietest_rotation` to choose from.
ROTATION_CANDIDATES = 8


def quietest_rotation(spectrogram, candidates, margin: int) -> jax.Array:
    """Picks, of each clip's candidate rotations, the one whose cut is quietest.

    Rotating by s moves frame F - s to the front: the rotated clip begins and ends at
    that cut. A cut through a sound would start or end the clip mid-sound, which whole
    clips seldom do, and would give the negative away without any synchrony.

    Args:
      spectrogram: [B, F, bins] (log) spectrograms; a frame's loudness is its mean over
        frequency.
      candidates: [B, K] int rotations, in frames.
      margin: a cut's loudness is that of the loudest frame within `margin` frames
        either side of it.

    Returns:
      [B] the chosen rotations.
    """
    frames = spectrogram.shape[1]
    loudness = spectrogram.mean(axis=2)  # [B, F]
    offsets = jnp.arange(-margin, margin)
    around_cut = (frames - candidates[..., None] + offsets) % frames  # [B, K, 2 * margin]
    cut_loudness = jnp.take_along_axis(
        loudness[:, None, :], around_cut, axis=2).max(axis=2)  # [B, K]
    best = jnp.argmin(cut_loudness, axis=1)
    return jnp.take_along_axis(candidates, best[:, None], axis=1)[:, 0]


def matching_partners(key, anchor, other, negatives: str, temperature):
    """Draws the partner of each anchor for the matching head.

    Half the pairs (rounded up) are positives (partner = the item itself); the
    others pair the anchor with another item of the global batch: uniformly
    ('random') or sampled by similarity ('hard'). The diagonal is never a negative.

    Args:
      key: PRNG key.
      anchor: [B, D] embeddings (used only for 'hard').
      other: [B, D] embeddings (used only for 'hard').
      negatives: 'random' or 'hard'.
      temperature: divides the cosine similarities 'hard' samples by.

    Returns:
      (partner, labels): partner [B] int32 index into `other`; labels [B] float32, 1 for
      positives.
    """
    batch_size = anchor.shape[0]
    label_key, negative_key = jax.random.split(key)
    rows = jnp.arange(batch_size)
    labels = jax.random.permutation(label_key, rows < (batch_size + 1) // 2)
    if negatives == "hard":
        similarity = jax.lax.stop_gradient(losses.cosine_similarity(anchor, other)) / temperature
        similarity = jnp.where(jnp.eye(batch_size, dtype=bool), -jnp.inf, similarity)
        negative = jax.random.categorical(negative_key, similarity, axis=-1)
    else:
        shift = jax.random.randint(negative_key, (batch_size,), 1, batch_size)
        negative = (rows + shift) % batch_size
    return jnp.where(labels, rows, negative).astype(jnp.int32), labels.astype(jnp.float32)


def pair_losses(model, pair, embeddings, sources, temperature, key, config, desynced):
    """Global terms of one pair: symmetric InfoNCE and binary matching (Eq. 7).

    The matching term is left out when `config.loss.matching` is off (fine-tuning
    trains the contrastive loss alone).

    Args:
      model: the VLSA module.
      pair: (anchor modality, other modality).
      embeddings: {modality: [B, D]} global embeddings.
      sources: {modality: (tokens, valid)} the embeddings come from (the 'joint_pass'
        matching head re-encodes them).
      temperature: the contrastive temperature.
      key: PRNG key (matching negatives).
      config: the run config.
      desynced: maps a modality of the pair to [B, D] embeddings of its items made out
        of step (`desynchronised_embeddings`): they join the candidates that the other
        modality's items rank.

    Returns:
      Float32 scalars: 'nce', 'retrieval_accuracy', `<modality>_sync_accuracy` for each
      modality of `desynced` (how often item i of the other modality scores its own
      partner above partner i desynchronised) and, with matching, 'match' and
      'match_accuracy'.
    """
    anchor, other = embeddings[pair[0]], embeddings[pair[1]]
    terms = {"nce": losses.symmetric_info_nce(anchor, other, temperature,
                                              desynced.get(pair[0]), desynced.get(pair[1])),
             "retrieval_accuracy": losses.contrastive_accuracy(anchor, other)}
    for modality, negatives in desynced.items():
        partner, query = (anchor, other) if modality == pair[0] else (other, anchor)
        query = losses.l2_normalize(query)
        own, out_of_step = ((query * losses.l2_normalize(x)).sum(axis=-1)
                            for x in (partner, negatives))
        terms[f"{modality}_sync_accuracy"] = jnp.mean(own > out_of_step).astype(jnp.float32)
    if not config.loss.matching:
        return terms
    partner, labels = matching_partners(key, anchor, other, config.matching.negatives, temperature)
    if config.matching.head == "joint_pass":
        # Re-encode each (anchor, partner) pair jointly and pool all its tokens.
        tokens, valid = sources[pair[1]]
        partner_source = (tokens[partner], None if valid is None else valid[partner])
        pair_sources = {pair[0]: sources[pair[0]], pair[1]: partner_source}
        encoded = model.encode(pair_sources)
        features = masked_mean(
            jnp.concatenate([encoded[m] for m in pair], axis=1),
            jnp.concatenate([valid_or_ones(*pair_sources[m]) for m in pair], axis=1))
    else:
        a, x = losses.l2_normalize(anchor), losses.l2_normalize(other[partner])
        features = jnp.concatenate([a, x, a * x, jnp.abs(a - x)], axis=-1)
    logits = model.match_logits(pair, features)
    return terms | {"match": losses.binary_matching_loss(logits, labels),
                    "match_accuracy": jnp.mean((logits > 0) == (labels > 0))}

