r"""The demo: SyncShapes generated, prepared, pre-trained on, evaluated and exported, on a CPU.

    python -m vlsa_jax.main --config=configs/demo.py --workdir=workdirs/demo
    python -m vlsa_jax.demo --workdir=workdirs/demo    # the same

One command runs everything (vlsa_jax/demo/run.py, named by `config.runner`): it writes the SyncShapes corpus
(vlsa_jax/demo/corpus.py) under `demo.data_dir` (default WORKDIR/data), prepares its
train, test and sync_hard splits into records with the same code as real datasets (a
WordPiece trained on the train captions), pre-trains with LPMM + GAM, runs the retrieval
sweep on test and on sync_hard (the time-shifted audio as distractors), exports the
embeddings, draws the pictures, and prints the results. A second run reuses the corpus,
the records and the latest checkpoint.

Args:
  quick: a 2-layer, width-64 model on 4 frames, 200 steps on 256 clips, 32 test clips:
    about 2 minutes on 2 cores instead of about 6.5 (the CI learning test runs it).
  steps, clips, test_clips, sync_clips: training steps, training clips, test clips,
    sync_hard clips; 0 takes the size's default (full: 800, 512, 128, 64; quick: 200,
    256, 32, 8).
"""
import pathlib

from vlsa_jax import config_lib

_FULL = dict(steps=800, clips=512, test_clips=128, sync_clips=64)
_QUICK = dict(steps=200, clips=256, test_clips=32, sync_clips=8)


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, quick=False, steps=0, clips=0, test_clips=0, sync_clips=0)
    defaults = _QUICK if arg.quick else _FULL
    for key, default in defaults.items():
        arg[key] = arg[key] or default
    pretrain = config_lib.load_config_module(pathlib.Path(__file__).parent / "pretrain.py")
    config = pretrain.get_config("variant=tiny")
    config.variant = "demo"
    config.runner = "vlsa_jax.demo.run:run_mode"

    config.demo = dict(
        data_dir="",  # '': WORKDIR/data
        seed=0,  # of the corpus
        num_train=arg.clips, num_test=arg.test_clips, num_sync_hard=arg.sync_clips,
        seconds=2.0, fps=8, frame_size=64, sample_rate=16_000,
        workers=2,  # processes generating and preparing the corpus
        # The sweep every N steps (about 2 s each; 0: only at the end), so that the
        # curves show retrieval being learnt; eval.every_steps once the splits exist.
        eval_every_steps=100,
        pictures=True)
    config.result_neutral_fields += ("demo.data_dir", "demo.workers", "demo.pictures")

    m = config.model
    if arg.quick:
        m.width, m.depth, m.num_heads, m.mlp_dim = 64, 2, 4, 128
        m.decoder_width, m.decoder_depth, m.decoder_num_heads, m.decoder_mlp_dim = 32, 1, 4, 64
    else:
        m.width, m.depth, m.num_heads, m.mlp_dim = 96, 2, 4, 192
        m.decoder_width, m.decoder_depth, m.decoder_num_heads, m.decoder_mlp_dim = 64, 1, 4, 128

    # 8 (quick: 4) of the 16 stored frames (8 fps x 2 s), 32x32: 16 video tokens a frame.
    v = config.video
    v.num_frames, v.size, v.patch = (4 if arg.quick else 8), 32, 8
    v.stored_frames, v.stored_short_side = 16, 64
    v.min_crop_scale = 1.0  # no crop: the shape is often at a wall
    v.random_flip = False  # captions say left and right

    # The whole 2 s clip: 64 frames of 32 ms (hop 512 at 16 kHz) x 32 mel bands.
    a = config.audio
    a.frontend, a.sample_rate, a.n_fft, a.hop = "logmel", 16_000, 1024, 512
    a.clip_samples, a.frames, a.bins, a.patch = 63 * 512, 64, 32, 8

    config.text.max_len = 40
    config.text.vocab_size = 512

    # Retrieval embeds whole clips: a 75%-masked clip often hides the small shape.
    config.gam.masked_inputs = False
    # Each clip's frames reversed are audio->video negatives: content alone cannot tell
    # them from the clip, only when the shape meets a wall against when the note sounds.
    config.gam.reversed_video_negatives = True

    config.data.source = "records"
    config.data.workers = 0
    config.train.batch_size = 32
    config.train.num_steps = arg.steps
    config.train.log_every_steps = 25
    config.optim.lr = 3e-3 if arg.quick else 2e-3
    config.optim.warmup_steps = max(arg.steps // 10, 1)
    config.checkpoint.every_steps = 200

    config.eval.batch_size = 64
    config.eval.dual_softmax = False
    return config
