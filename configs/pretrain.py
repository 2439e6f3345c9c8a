r"""VLSA pre-training: the paper's configuration and smaller variants.

    python -m vlsa_jax.main --config=configs/pretrain.py --workdir=DIR
    python -m vlsa_jax.main --config=configs/pretrain.py:variant=tiny,batch_size=8 --workdir=DIR
    python -m vlsa_jax.main --config=configs/pretrain.py --config.train.num_steps=100 --workdir=DIR
    python -m vlsa_jax.main --config=configs/pretrain.py:init=public --workdir=DIR

Variants: `base` is the paper (ViT-B encoder 12x768x12, decoder 8x512x16, 8 frames
of 224x224, a 256x256 spectrogram, 40 text tokens); `small` a ViT-S encoder on the
same inputs; `tiny` a few-layer model on small inputs, for tests and laptops.
`init=public` starts from facebook/vit-mae-base and bert-base-uncased (base only;
docs/training.md, "Starting from public weights").
Every field the code reads is declared here, and its default's type, the same in
every variant, is the field's type; the config is validated against them before any
work starts (vlsa_jax/config_validation.py). Fields that do not change a run's results
are marked beside their declarations, in `result_neutral_fields`.
"""
import ml_collections

from vlsa_jax import config_lib

# Per-variant sizes: encoder, decoder and inputs.
_VARIANTS = {
    "base": dict(
        width=768, depth=12, num_heads=12, mlp_dim=3072,
        decoder_width=512, decoder_depth=8, decoder_num_heads=16, decoder_mlp_dim=2048,
        num_frames=8, frame_size=224, video_patch=16,
        audio_frames=256, audio_bins=256, audio_patch=16,
        text_len=40, vocab_size=30522,
    ),
    "small": dict(
        width=384, depth=12, num_heads=6, mlp_dim=1536,
        decoder_width=256, decoder_depth=4, decoder_num_heads=8, decoder_mlp_dim=1024,
        num_frames=8, frame_size=224, video_patch=16,
        audio_frames=256, audio_bins=256, audio_patch=16,
        text_len=40, vocab_size=30522,
    ),
    "tiny": dict(
        width=64, depth=2, num_heads=4, mlp_dim=128,
        decoder_width=32, decoder_depth=1, decoder_num_heads=4, decoder_mlp_dim=64,
        num_frames=4, frame_size=32, video_patch=8,
        audio_frames=32, audio_bins=32, audio_patch=8,
        text_len=12, vocab_size=512,
    ),
}


def get_config(arg=None):
    """Returns the pre-training config; `arg` is `key=value,...` (see module docstring)."""
    arg = config_lib.parse_arg(
        arg, variant="base", batch_size=-1, num_steps=-1, fsdp=1, tensor=1, init="")
    if arg.variant not in _VARIANTS:
        raise ValueError(f"variant={arg.variant!r} is not one of {sorted(_VARIANTS)}")
    if arg.init not in ("", "public"):
        raise ValueError(f"init={arg.init!r} is not 'public' (or left out)")
    if arg.init == "public" and arg.variant != "base":
        raise ValueError(f"init=public needs variant=base: the public checkpoints are "
                         f"ViT-B and BERT-base (width 768), not variant={arg.variant}")
    size = _VARIANTS[arg.variant]
    tiny = arg.variant == "tiny"

    config = ml_collections.ConfigDict()
    config.variant = arg.variant
    config.seed = 0
    # Activation dtype; parameters, optimizer state, losses and softmax stay float32.
    config.dtype = "float32"
    # 'module:function' that runs this config's jobs in place of the core's train, eval
    # and export (a project on top of the core, e.g. the demo); '' runs the core's.
    config.runner = ""
    # Fields that locate the data or set throughput, logging and saving, not what a run
    # learns or scores: a sweep reuses a finished run whatever their values. Each section
    # marks its own below; the runner only picks which jobs run, and this list is no result.
    config.result_neutral_fields = ("runner", "result_neutral_fields")

    config.model = ml_collections.ConfigDict()
    config.model.width = size["width"]
    config.model.depth = size["depth"]
    config.model.num_heads = size["num_heads"]
    config.model.mlp_dim = size["mlp_dim"]
    config.model.decoder_width = size["decoder_width"]
    config.model.decoder_depth = size["decoder_depth"]
    config.model.decoder_num_heads = size["decoder_num_heads"]
    config.model.decoder_mlp_dim = size["decoder_mlp_dim"]
    config.model.layer_norm_eps = 1e-6
    config.model.qkv_bias = True
    config.model.init_std = 0.02
    # 'none' | 'full' | 'dots' | 'dots_no_batch': what each scanned layer keeps for backward.
    config.model.remat_policy = "none"
    # 'xla' | 'cudnn' (flash attention on NVIDIA GPUs).
    config.model.attention_impl = "xla"
    # Modalities encoded together by the one shared encoder (paper Fig. 3): 'avt' |
    # 'vt' | 'at' | 'av' | 'none'. The others get an encoder of their own.
    config.model.joint_modalities = "avt"
    # Modalities whose reconstructions share one decoder stack (paper Fig. 4).
    config.model.decoder_sharing = "avt"

    config.video = ml_collections.ConfigDict()
    config.video.num_frames = size["num_frames"]
    config.video.size = size["frame_size"]
    config.video.patch = size["video_patch"]
    # Prepared records store more frames than the model samples, at this short side.
    config.video.stored_frames = 16 if not tiny else 8
    config.video.stored_short_side = 256 if not tiny else 40
    # Training augmentation: one random square crop (of at least this fraction of the
    # short side's square, by area) and one horizontal flip per clip.
    config.video.min_crop_scale = 0.5
    config.video.random_flip = True
    config.video.mean = (0.485, 0.456, 0.406)  # ImageNet RGB statistics
    config.video.std = (0.229, 0.224, 0.225)

    config.audio = ml_collections.ConfigDict()
    # 'sop_logfreq' (the paper, after Sound of Pixels: |STFT| warped to a log-frequency
    # scale, then log) or 'logmel' (librosa mel filterbank, then log).
    config.audio.frontend = "sop_logfreq"
    config.audio.sample_rate = 11_025
    config.audio.n_fft = 1022  # 512 frequency bins
    config.audio.hop = 256
    # The window centred on the clip: 65,535 samples (5.94 s) give 256 STFT frames.
    config.audio.clip_samples = 65_535 if not tiny else 8_191
    # Spectrogram normalisation, (x - norm_mean) / norm_std. norm_from_data: the data's,
    # filled in when a job starts (state.resolve_audio_norm): pre-training, the training
    # split's statistics (its manifest's spectrogram_stats); fine-tuning (init.checkpoint),
    # evaluation and export, those the checkpoint was trained with. The run's config.json
    # records the values used. Off: norm_mean and norm_std as set (a checkpoint trained
    # with others is warned of). Random batches are drawn normalised: the values set stay.
    config.audio.norm_from_data = True
    config.audio.norm_mean = -4.0
    config.audio.norm_std = 4.0
    config.audio.frames = size["audio_frames"]  # spectrogram time frames
    config.audio.bins = size["audio_bins"]  # spectrogram frequency bins
    config.audio.patch = size["audio_patch"]

    config.text = ml_collections.ConfigDict()
    # A Hugging Face tokenizer name or local directory; 'train' trains a WordPiece on
    # the training captions when the data are prepared.
    config.text.tokenizer = "bert-base-uncased" if not tiny else "train"
    config.text.max_len = size["text_len"]
    config.text.vocab_size = size["vocab_size"]
    # bert-base-uncased ids: [PAD] 0, [CLS] 101, [SEP] 102, [MASK] 103.
    config.text.mask_token_id = 103 if not tiny else 3
    config.text.special_token_ids = (0, 101, 102, 103) if not tiny else (0, 1, 2, 3)

    config.masking = ml_collections.ConfigDict()
    config.masking.video_ratio = 0.75  # of each frame's patches, frames independently
    config.masking.audio_ratio = 0.75
    config.masking.text_ratio = 0.15  # BERT-style, in place: 80% [MASK], 10% random, 10% kept

    config.loss = ml_collections.ConfigDict()
    config.loss.lpmm = True  # local-patch masked modeling
    config.loss.gam = True  # global audio matching: audio-video and audio-text
    config.loss.vtm = False  # video-text matching (the baseline GAM replaces, App. E)
    config.loss.matching = True  # the binary matching head's term in each global pair
    config.loss.lambda_global = 5.0
    config.loss.temperature = 0.05
    config.loss.learnable_temperature = False
    config.loss.patch_reduction = "mean"  # 'mean' (MAE) | 'sum' (Eq. 5 literally)

    config.gam = ml_collections.ConfigDict()
    # 'unimodal': each modality encoded alone, as at retrieval; 'joint': pools of a joint
    # pass (with masked_inputs, the LPMM pass itself).
    config.gam.features = "unimodal"
    # Video and audio through the global loss as their MAE-visible patches (cheaper), or
    # whole; captions always whole (BERT masking drops no token, so it saves nothing).
    config.gam.masked_inputs = True
    # Negatives that only synchrony tells apart (the paper has none). (low, high):
    # video->audio also ranks each clip's own audio rotated in time by a random fraction
    # of its length in [low, high] (its interior, cut where it is quiet: see
    # objective.desynchronised_embeddings); () leaves them out.
    config.gam.shifted_audio_negatives = ()
    # audio->video also ranks each clip's own frames in reverse order.
    config.gam.reversed_video_negatives = False

    config.matching = ml_collections.ConfigDict()
    config.matching.head = "pair_features"  # 'pair_features' | 'joint_pass'
    config.matching.negatives = "random"  # 'random' | 'hard' (sampled by similarity)

    config.data = ml_collections.ConfigDict()
    # 'records': prepared ArrayRecord splits (vlsa_jax.data.prepare); 'random': random
    # batches of the right shapes, for smoke runs before any data is prepared.
    config.data.source = "records" if not tiny else "random"
    config.data.train_split = "data/pretrain/train"  # a prepared split directory
    config.data.modalities = "avt"  # the modalities used; the split must carry them
    config.data.shuffle_seed = 0
    config.data.workers = 8 if not tiny else 0  # grain worker processes per host
    config.data.read_threads = 8 if not tiny else 2
    config.result_neutral_fields += ("data.train_split", "data.workers", "data.read_threads")

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = (8 if tiny else 2048) if arg.batch_size == -1 else arg.batch_size
    config.train.num_steps = (100 if tiny else 200_000) if arg.num_steps == -1 else arg.num_steps
    # End this run early (time-sliced jobs); the schedule still follows num_steps. -1: never.
    config.train.stop_after_steps = -1
    config.train.log_every_steps = 10 if tiny else 50
    config.train.on_nonfinite = "error"  # 'error' | 'skip' (drop the update, count it)
    config.result_neutral_fields += ("train.stop_after_steps", "train.log_every_steps")

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-3 if tiny else 1e-4
    config.optim.weight_decay = 0.01
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.warmup_steps = 10 if tiny else 2_500
    config.optim.schedule = "cosine"  # 'cosine' | 'linear' | 'constant', after warmup
    config.optim.grad_clip = 1.0  # global norm; 0 disables

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # -1: the devices the other axes leave
    config.mesh.fsdp = arg.fsdp
    config.mesh.tensor = arg.tensor
    # Logical parameter axes -> mesh axes. Batches shard over ('data', 'fsdp').
    config.mesh.logical_axis_rules = (
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("vocab", "tensor"),
        ("kv", None),
        ("patch", None),
        ("layers", None),
        ("positions", None),
    )

    config.eval = ml_collections.ConfigDict()
    # Prepared splits to evaluate, comma-separated. `DIR+OTHER` adds OTHER's clips to
    # DIR's galleries as distractors (never correct); `DIR+OTHER:a` adds only their
    # audio (or ':v' their video). The split is named after DIR's last component.
    config.eval.splits = ""
    # Retrieval directions, query2gallery; 'va' is the fused video+audio embedding.
    config.eval.directions = "t2v,v2t,t2a,a2t,v2a,a2v,t2va,va2t"
    config.eval.caption_mode = "all"  # 'all': every caption is a query | 'first'
    config.eval.protocol = "zero_shot"  # 'zero_shot' | 'fine_tuned': recorded with the numbers
    config.eval.batch_size = 8 if tiny else 256  # global, clips or captions per batch
    # Query rows of the similarity matrix scored at once: memory is block_size x gallery.
    config.eval.block_size = 1024
    # Also report dual-softmax re-ranking (uses the whole query set) as its own rows.
    config.eval.dual_softmax = False
    config.eval.dual_softmax_temperature = 0.01
    config.eval.every_steps = 0  # evaluate during training every N steps; 0: never
    # --mode=eval/export: this checkpoint (a run's workdir, checkpoints folder or one
    # step's folder); '': the newest checkpoint of --workdir.
    config.eval.checkpoint = ""
    config.result_neutral_fields += ("eval.splits", "eval.batch_size", "eval.block_size")

    config.init = ml_collections.ConfigDict()
    # Start training from these weights (a workdir, checkpoints folder or step folder);
    # the optimizer starts fresh. '': random initialisation. Ignored when resuming.
    config.init.checkpoint = ""
    # Public weights, read before init.checkpoint (which overrides them; both ignored when
    # resuming): a directory with config.json + model.safetensors, or a Hub name.
    public = arg.init == "public"
    # ViT or ViTMAE: encoder, video patches and positions (ViTMAE: also the decoder).
    config.init.vit = "facebook/vit-mae-base" if public else ""
    # BERT: the text embedding (words, positions, LayerNorm).
    config.init.bert = "bert-base-uncased" if public else ""
    # The audio patch projection from init.vit's image one, averaged over RGB (CAV-MAE).
    config.init.audio_from_vit = public

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 50 if tiny else 1_000
    config.checkpoint.keep = 3
    config.checkpoint.async_save = True
    config.result_neutral_fields += (
        "checkpoint.every_steps", "checkpoint.keep", "checkpoint.async_save")
    return config
