r"""Shareable weights: a run's parameters in one safetensors file, its config inside.

    python -m vlsa_jax.export_weights --workdir=DIR --out=FILE.safetensors [--step=N]

writes the parameters of the newest checkpoint of the run in DIR (or of its step N), and
nothing else: no optimizer state, RNG or data position. Tensors are float32, named by
their path in the parameter tree joined with '.' (`encoders.0.blocks.attn.query.kernel`);
the file's metadata holds the run's config as JSON ('config'), the step ('step') and
'format': 'vlsa_jax'. The file goes wherever a checkpoint does:

    --config.init.checkpoint=FILE.safetensors   fine-tune from it
    --config.eval.checkpoint=FILE.safetensors   --mode=eval / --mode=export with it
"""
import dataclasses
import json
import pathlib

import jax
import ml_collections
from absl import app, flags

from vlsa_jax import checkpointing, cli, state

CONFIG = "config.json"


@dataclasses.dataclass(frozen=True)
class WrittenWeights:
    """What `export_weights` wrote.

    Attributes:
      path: the weights file.
      step: the step of the parameters.
      num_tensors: how many tensors the file holds.
      num_params: how many numbers they hold.
    """

    path: pathlib.Path
    step: int
    num_tensors: int
    num_params: int

    def describe(self) -> str:
        """One line: the file, its step, tensors, parameters and size."""
        megabytes = self.path.stat().st_size / 2**20
        return (f"wrote the weights of step {self.step} to {self.path}: {self.num_tensors} "
                f"tensors, {self.num_params / 1e6:.2f}M parameters, {megabytes:.1f} MiB")


def run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The config that training saved in `workdir`.

    Raises:
      FileNotFoundError: `workdir` holds no config.json.
    """
    path = workdir / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{workdir}: no {CONFIG}; is it a run's --workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def checkpoint_of(workdir: pathlib.Path, step: int | None) -> pathlib.Path:
    """The checkpoint folder of `step` in `workdir`, or `workdir` itself (its newest) for None.

    Raises:
      FileNotFoundError: the run has no checkpoint of `step`, naming the steps it has.
    """
    if step is None:
        return workdir
    folder = workdir / "checkpoints"
    if not (folder / str(step) / "state").is_dir():
        held = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit())
        raise FileNotFoundError(f"{workdir}: no checkpoint of step {step}; its steps: "
                                f"{', '.join(map(str, held)) or 'none'}")
    return folder / str(step)


def export_weights(workdir, out, step: int | None = None) -> WrittenWeights:
    """Writes the parameters of a run's checkpoint to the weights file `out`.

    Args:
      workdir: the run's workdir (its config.json and checkpoints).
      out: the file to write, ending in `.safetensors`.
      step: the checkpoint's step; None for the newest.

    Raises:
      FileNotFoundError: no config or no checkpoint (of `step`) in `workdir`.
      ValueError: `out` does not end in `.safetensors`.
    """
    workdir, out = pathlib.Path(workdir), pathlib.Path(out)
    if not checkpointing.is_weights_file(out):
        raise ValueError(f"--out={out}: name it *{checkpointing.WEIGHTS_SUFFIX}, the suffix "
                         "that init.checkpoint and eval.checkpoint recognise")
    config = run_config(workdir)
    loaded = state.load_params(config, checkpoint_of(workdir, step), one_device=True)
    num_tensors = checkpointing.save_weights(out, loaded.params, config.to_dict(), loaded.step)
    num_params = sum(x.size for x in jax.tree.leaves(loaded.params))
    return WrittenWeights(out, loaded.step, num_tensors, num_params)


FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.setup_process()
    print(export_weights(FLAGS.workdir, FLAGS.out, FLAGS.step).describe())


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A run's --workdir: its config.json and checkpoints.")
    flags.DEFINE_string("out", None, "The weights file to write, FILE.safetensors.")
    flags.DEFINE_integer("step", None, "The checkpoint's step; the newest when not given.",
                         lower_bound=0)
    flags.mark_flags_as_required(["workdir", "out"])
    cli.run(main)
