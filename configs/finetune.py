r"""Fine-tuning a pre-trained VLSA for retrieval on one downstream dataset.

    python -m vlsa_jax.main --config=configs/finetune.py:dataset=msrvtt \
        --config.init.checkpoint=PRETRAIN_WORKDIR --workdir=DIR
    python -m vlsa_jax.main --config=configs/finetune.py:dataset=msrvtt --workdir=DIR --mode=eval

Datasets: msrvtt, lsmdc (text-video), audiocaps, sounddescs (text-audio), youcook2
(audio-video). The paper fine-tunes for 20 epochs at batch 256; the loss is the
symmetric contrastive loss of the dataset's pair on the pooled unimodal embeddings
(no masked modelling, no matching head). The weights come from `init.checkpoint`;
the optimizer starts fresh (lr 1e-4 with 10% warmup, as All-in-one). The number of
steps follows the public training split's size below; if your prepared split
differs, set `--config.train.num_steps`. MSR-VTT trains on the 9k split (the 10,000
videos less the 1k-A test list, all their captions; JSFusion, Frozen, CLIP4Clip) and
evaluates on 1k-A. Prepare the splits first, e.g. from a folder holding
videodatainfo.json and MSRVTT_JSFUSION_test.csv (and MSRVTT_train.9k.csv, if you have it)

    python -m vlsa_jax.data.prepare --dataset=msrvtt --annotations=MSRVTT_ANNOTATIONS \
        --media_dir=... --output_dir=data/msrvtt --split=9k \
        --config=configs/finetune.py:dataset=msrvtt
    python -m vlsa_jax.data.prepare --dataset=msrvtt --annotations=MSRVTT_ANNOTATIONS \
        --media_dir=... --output_dir=data/msrvtt --split=1k-A \
        --config=configs/finetune.py:dataset=msrvtt

Other args as in pretrain.py: variant, batch_size, fsdp, tensor, and epochs.
"""
import math
import pathlib

from vlsa_jax import config_lib

# dataset -> modalities, retrieval pair, training clips of the public split, splits.
_DATASETS = {
    "msrvtt": dict(modalities="vt", pair="vt", train_clips=9_000,
                   train="data/msrvtt/9k", test="data/msrvtt/1k-A"),
    "lsmdc": dict(modalities="vt", pair="vt", train_clips=101_079,
                  train="data/lsmdc/train", test="data/lsmdc/test"),
    "audiocaps": dict(modalities="at", pair="at", train_clips=49_291,
                      train="data/audiocaps/train", test="data/audiocaps/test"),
    "sounddescs": dict(modalities="at", pair="at", train_clips=23_085,
                       train="data/sounddescs/train", test="data/sounddescs/test"),
    "youcook2": dict(modalities="av", pair="av", train_clips=9_586,
                     train="data/youcook2/train", test="data/youcook2/val"),
}
_DIRECTIONS = {"vt": "t2v,v2t", "at": "t2a,a2t", "av": "a2v,v2a"}


def get_config(arg=None):
    """Returns the fine-tuning config of `dataset`; `arg` is `key=value,...`."""
    arg = config_lib.parse_arg(arg, dataset="msrvtt", variant="base", batch_size=-1,
                               epochs=20, fsdp=1, tensor=1)
    if arg.dataset not in _DATASETS:
        raise ValueError(f"dataset={arg.dataset!r} is not one of {sorted(_DATASETS)}")
    dataset = _DATASETS[arg.dataset]
    pretrain = config_lib.load_config_module(pathlib.Path(__file__).parent / "pretrain.py")
    config = pretrain.get_config(
        f"variant={arg.variant},batch_size={arg.batch_size},fsdp={arg.fsdp},tensor={arg.tensor}")
    tiny = arg.variant == "tiny"

    config.data.source = "records"
    config.data.modalities = dataset["modalities"]
    config.data.train_split = dataset["train"]
    if arg.batch_size == -1:
        config.train.batch_size = 8 if tiny else 256
    steps_per_epoch = math.ceil(dataset["train_clips"] / config.train.batch_size)
    config.train.num_steps = arg.epochs * steps_per_epoch
    config.optim.lr = 1e-3 if tiny else 1e-4
    config.optim.warmup_steps = config.train.num_steps // 10
    config.checkpoint.every_steps = steps_per_epoch

    # The contrastive loss of the dataset's pair only.
    config.loss.lpmm = False
    config.loss.gam = dataset["pair"] != "vt"  # audio-text or audio-video
    config.loss.vtm = dataset["pair"] == "vt"
    config.loss.matching = False
    config.gam.masked_inputs = False  # the unmasked unimodal passes retrieval uses
    # Audio is normalised as the pre-trained weights were: audio.norm_from_data (the
    # default) takes the values init.checkpoint was trained with, not this split's.
    config.loss.lambda_global = 1.0

    config.eval.splits = dataset["test"]
    config.eval.directions = _DIRECTIONS[dataset["pair"]]
    config.eval.protocol = "fine_tuned"
    config.eval.every_steps = config.train.num_steps  # once, at the end of training
    return config
