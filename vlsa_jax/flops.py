r"""Model FLOPs of one pre-training step, counted analytically from the config.

The count is what model FLOPs utilisation (MFU) divides by: the matrix products the
objective asks for, once each, whatever the remat policy recomputes. One multiply-add
is 2 FLOPs. A training step is 3 x the forward pass (the backward pass costs twice
the forward: one product for the input's gradient, one for the weights').

Notation: B the global batch, D / L / M the encoder's width, depth and MLP width,
D' / L' / M' the decoder's, V the vocabulary, p_v and p_a the patch sides. Tokens per
clip (`models.vlsa.token_grids`):

* video N_v = frames x (size / p_v)^2, of which K_v = frames x `masking.num_kept`
  (patches per frame, video ratio) stay visible (each frame is masked alone);
* audio N_a = (frames / p_a) x (bins / p_a), K_a = `num_kept`(N_a, audio ratio);
* text N_t = K_t = text.max_len (BERT masking replaces tokens in place; padding is
  attended over as masked-out keys, so it costs as much as a real token).

One transformer stack of depth L and width D over S tokens, per clip::

    stack(S) = L x (8 S D^2      # query, key, value and output projections
                    + 4 S D M    # the two MLP layers
                    + 4 S^2 D)   # attention scores Q K^T and the weighted sum A V

(the number of heads does not change it). LayerNorms, GELUs, softmaxes, residual
adds, biases, masking gathers and embedding lookups are counted as 0: they are
elementwise or data movement (under 1% of XLA's count at base widths, about 8% at
the tiny variant's).

The forward pass of a step (`objective.pretraining_loss`), per clip, adds up:

* patch projections, every time a modality is embedded (`VLSA.tokens`, before
  any patch is dropped): 2 N_v (3 p_v^2) D for video, 2 N_a p_a^2 D for audio, 0 for
  text. A modality is embedded once for masking (when `loss.lpmm`, or when
  `gam.masked_inputs` and the global loss uses it), once more unmasked for the global loss (when a global pair
  is on and `gam.masked_inputs` is off), and once per desynchronised negative.
* encoder passes. `VLSA.encode` runs one stack per encoder group
  (`model.joint_modalities`) over the concatenated tokens of its members:
  - LPMM (`loss.lpmm`): the joint pass over [K_v; N_t; K_a];
  - global loss (any `global_pairs` pair): its sources are the visible video and
    audio tokens (K_m, `gam.masked_inputs`) or all of them (N_m), and the whole
    caption (N_t). `gam.features='unimodal'` encodes each modality of a pair alone
    (a modality in no pair is dead code, which XLA drops); `'joint'` reuses the
    LPMM pass when LPMM is on and `gam.masked_inputs`, else makes one joint pass
    over the sources of every modality;
  - desynchronised negatives (when the audio-video pair is on): the shifted audio
    (`gam.shifted_audio_negatives`) and the reversed video
    (`gam.reversed_video_negatives`), each encoded as the global loss encodes its
    modality;
  - `matching.head='joint_pass'`: one pass over each pair's sources, together.
* decoders (`loss.lpmm`), one pass per modality over all its N_m tokens, whichever
  decoder stack it shares (`model.decoder_sharing` changes parameters, not FLOPs):
  2 K_m D D' (encoder width to decoder width) + stack'(N_m) with the decoder's sizes.
* heads, over every position (the loss picks the masked ones afterwards):
  video 2 N_v D' (3 p_v^2), audio 2 N_a D' p_a^2, text (MLM) 2 N_t (D'^2 + D' V).
* global terms, per batch: each matching head 2 B F (F = 4D for pair features, D
  for the joint pass), and each B x B cosine-similarity matrix 2 B^2 D (the InfoNCE
  logits, each desynchronised negative set, the accuracy metric, hard negatives).

model FLOPs per step = 3 x B x (the per-clip terms) + 3 x (the per-batch terms).

The 3 x convention overcounts the patch projections, whose backward pass needs the
weights' gradient only (their input is data): 0.2% of a base step, 0.7% with LPMM
off.

`tests/test_flops.py` checks this count against XLA's cost analysis of the same
jitted step with the layer scans unrolled. For the paper's base model at batch 2 it
is 1.94 TFLOP; `flops_breakdown` gives the parts.
"""
import collections

import ml_collections

from vlsa_jax import masking
from vlsa_jax.modalities import AUDIO, TEXT, VIDEO, modalities_of
from vlsa_jax.models.vlsa import global_pairs, modality_groups, patch_dims, token_grids

# A training step's FLOPs per forward FLOP: forward, then a backward of twice its cost.
TRAIN_STEP_MULTIPLIER = 3


def token_counts(config: ml_collections.ConfigDict) -> tuple[dict[str, int], dict[str, int]]:
    """Tokens per clip of each modality the data carry: (all of them, those kept visible).

    Args:
      config: the run config.

    Returns:
      ({modality: N}, {modality: K}): K is what the MAE masks keep (video frame by
      frame); text keeps all its tokens.
    """
    grids = token_grids(config)
    present = modalities_of(config.data.modalities)
    total, kept = {}, {}
    if VIDEO in present:
        frames, patches = grids[VIDEO]
        total[VIDEO] = frames * patches
        kept[VIDEO] = frames * masking.num_kept(patches, config.masking.video_ratio)
    if AUDIO in present:
        total[AUDIO] = grids[AUDIO][0] * grids[AUDIO][1]
        kept[AUDIO] = masking.num_kept(total[AUDIO], config.masking.audio_ratio)
    if TEXT in present:
        total[TEXT] = kept[TEXT] = config.text.max_len
    return total, kept


def stack_flops(tokens: int, width: int, depth: int, mlp_dim: int) -> float:
    """Forward FLOPs of one transformer stack over one sequence of `tokens`.

    Args:
      tokens: S, the sequence length.
      width: D.
      depth: the number of layers.
      mlp_dim: M.

    Returns:
      depth x (8 S D^2 + 4 S D M + 4 S^2 D).
    """
    s, d = float(tokens), float(width)
    return depth * (8 * s * d * d + 4 * s * d * mlp_dim + 4 * s * s * d)


def flops_breakdown(config: ml_collections.ConfigDict) -> dict[str, float]:
    """Forward FLOPs of one step on the global batch, by pass and part.

    Keys are '<part>/<what>': 'patch_projection/<modality>' (all its embeddings in
    the step), 'encoder/<pass>' (pass: 'lpmm', 'global_<modalities>',
    'desync_<modality>', 'matching_<pair>'; one entry per encoder group it runs),
    'decoder/<modality>' (with its input projection), 'head/<modality>',
    'global/matching_heads' and 'global/similarities'. The module docstring gives
    the formula of each.

    Args:
      config: the run config.

    Returns:
      {key: forward FLOPs}, omitting parts the config does not run.
    """
    m = config.model
    batch = float(config.train.batch_size)
    total, kept = token_counts(config)
    inputs = tuple(total)
    dims = patch_dims(config)
    groups = modality_groups(m.joint_modalities)
    pairs = [p for p in global_pairs(config) if p[0] in inputs and p[1] in inputs]
    masked_inputs = config.gam.masked_inputs
    source_tokens = kept if masked_inputs else total
    out = collections.defaultdict(float)

    def embed(modalities):
        for modality in modalities:
            if modality in dims:
                out[f"patch_projection/{modality}"] += (
                    batch * 2 * total[modality] * dims[modality] * m.width)

    def encode(name, tokens):
        """One `VLSA.encode` call: a stack per encoder group over its members' tokens."""
        for group in groups:
            members = [mod for mod in group if mod in tokens]
            if members:
                key = name if len(groups) == 1 else f"{name}[{'+'.join(members)}]"
                out[f"encoder/{key}"] += batch * stack_flops(
                    sum(tokens[mod] for mod in members), m.width, m.depth, m.mlp_dim)

    def global_passes(name, modalities):
        """The encoder passes that give the global embeddings of `modalities`."""
        tokens = {mod: source_tokens[mod] for mod in modalities}
        if config.gam.features == "joint":
            encode(f"{name}_joint", tokens)
        else:
            for mod in modalities:
                encode(f"{name}_{mod}", {mod: tokens[mod]})

    # Global embeddings that no pair uses are dead code, which XLA drops; a joint pass
    # keeps every modality, since each attends to the others.
    paired = tuple(mod for mod in inputs if any(mod in pair for pair in pairs))
    if config.loss.lpmm:
        embed(inputs)
    elif masked_inputs:
        embed(paired if config.gam.features == "unimodal" else inputs)
    if config.loss.lpmm:
        encode("lpmm", kept)
        for mod in inputs:
            out[f"decoder/{mod}"] += batch * (
                2 * kept[mod] * m.width * m.decoder_width
                + stack_flops(total[mod], m.decoder_width, m.decoder_depth, m.decoder_mlp_dim))
            if mod == TEXT:
                d = m.decoder_width
                out[f"head/{mod}"] += batch * 2 * total[mod] * (d * d + d * config.text.vocab_size)
            else:
                out[f"head/{mod}"] += batch * 2 * total[mod] * m.decoder_width * dims[mod]

    if pairs:
        if not masked_inputs:
            embed(paired if config.gam.features == "unimodal" else inputs)
        if config.gam.features == "unimodal":
            global_passes("global", paired)
        elif not (config.loss.lpmm and masked_inputs):
            global_passes("global", inputs)
        altered = []
        if (AUDIO, VIDEO) in pairs:
            altered = ([AUDIO] if config.gam.shifted_audio_negatives else []) + (
                [VIDEO] if config.gam.reversed_video_negatives else [])
            embed(altered)
            if altered:
                global_passes("desync", altered)
        similarities = 0
        for pair in pairs:
            similarities += 2 + sum(mod in pair for mod in altered if pair == (AUDIO, VIDEO))
            if not config.loss.matching:
                continue
            similarities += config.matching.negatives == "hard"
            if config.matching.head == "joint_pass":
                encode(f"matching_{pair[0]}_{pair[1]}",
                       {mod: source_tokens[mod] for mod in pair})
                features = m.width
            else:
                features = 4 * m.width
            out["global/matching_heads"] += 2 * batch * features
        out["global/similarities"] += similarities * 2 * batch * batch * m.width
    return dict(out)


def forward_flops(config: ml_collections.ConfigDict) -> float:
    """Forward FLOPs of one step on the global batch: the sum of `flops_breakdown`."""
    return sum(flops_breakdown(config).values())


def model_flops_per_step(config: ml_collections.ConfigDict) -> float:
    """Model FLOPs of one training step on the global batch: 3 x `forward_flops`.

    Args:
      config: the run config (sizes, objective switches, batch size).

    Returns:
      FLOPs (1 multiply-add = 2), independent of the remat policy and the dtype.
    """
    return TRAIN_STEP_MULTIPLIER * forward_flops(config)


def mfu(config: ml_collections.ConfigDict, step_seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: `model_flops_per_step` / step time / peak FLOP/s."""
    return model_flops_per_step(config) / step_seconds / peak_flops_per_s
