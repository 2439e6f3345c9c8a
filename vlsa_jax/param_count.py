r"""Parameter counts of the VLSA model, computed from shapes alone (nothing is allocated).

    python -m vlsa_jax.param_count --config=configs/pretrain.py
    python -m vlsa_jax.param_count --config=configs/pretrain.py --variants=tiny,small,base
    python -m vlsa_jax.param_count --config=configs/pretrain.py \
        --variants=base --config.model.joint_modalities=none

Prints, per variant, the total and its breakdown by top-level part of the model,
in millions. Overrides given as `--config.x.y=...` apply to every listed variant.
"""
from collections.abc import Sequence

import jax
import ml_collections
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from vlsa_jax import cli, config_lib
from vlsa_jax.models.vlsa import abstract_model

# Top-level attributes of VLSA in table order; any other parameter (the learned
# temperature) is counted under 'other'.
PARTS = (
    "embeddings", "modality_type", "encoders", "decoders", "decoder_inputs", "heads",
    "matching_heads", "other")

FLAGS = flags.FLAGS


def count_parameters(config: ml_collections.ConfigDict) -> dict[str, int]:
    """Counts the model's parameters by top-level part, without allocating them.

    Args:
      config: the run config.

    Returns:
      Part name (every entry of `PARTS`, 0 where the config builds no such part)
      -> number of parameters, plus 'total'.
    """
    params = nnx.state(abstract_model(config), nnx.Param)
    counts = dict.fromkeys(PARTS, 0)
    for name, subtree in params.items():
        part = name if name in counts else "other"
        counts[part] += sum(leaf.size for leaf in jax.tree.leaves(subtree))
    counts["total"] = sum(counts.values())
    return counts


def format_counts(variant: str, counts: dict[str, int]) -> str:
    """A table of one variant's counts, in millions with two decimals."""
    lines = [f"variant {variant}", f"  {'part':<16}{'params (M)':>12}"]
    lines += [f"  {part:<16}{counts[part] / 1e6:>12.2f}" for part in (*PARTS, "total")]
    return "\n".join(lines)


def variant_configs(
    names: Sequence[str],
) -> dict[str, ml_collections.ConfigDict]:
    """Loads the `--config` file once per variant, with the command line's overrides.

    The file's own arguments (`file.py:key=value`) are kept, with `variant=NAME`
    appended so that it takes precedence.

    Args:
      names: variant names the config file accepts.

    Returns:
      Variant name -> config.
    """
    path, _, arg = FLAGS["config"].config_filename.partition(":")
    module = config_lib.load_config_module(path)
    overrides = config_flags.get_override_values(FLAGS["config"])
    configs = {}
    for name in names:
        config = module.get_config(",".join(filter(None, (arg, f"variant={name}"))))
        config.update_from_flattened_dict(overrides)
        configs[name] = config
    return configs


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.variants:
        configs = variant_configs(FLAGS.variants)
    else:
        configs = {FLAGS.config.variant: FLAGS.config}
    print("\n\n".join(
        format_counts(name, count_parameters(config)) for name, config in configs.items()))


if __name__ == "__main__":
    # Defined only when run as a program, so that importing `count_parameters`
    # next to another program's `--config` flag (in tests) does not clash.
    config_flags.DEFINE_config_file("config", None, "Path to the config file.")
    flags.DEFINE_list(
        "variants", None, "Variants to count, e.g. tiny,small,base (default: the config's own).")
    flags.mark_flag_as_required("config")
    cli.run(main)
