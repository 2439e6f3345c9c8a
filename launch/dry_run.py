r"""The device and batch arithmetic of a launch: the launchers' dry runs (DRY_RUN=1) call it.

    python launch/dry_run.py --hosts=4 --devices_per_host=8 --host_kind="SLURM nodes" \
        --device_kind=GPUs -- --config=configs/pretrain.py --workdir=DIR [flags...]

The arguments after `--` are those of `python -m vlsa_jax.main`, parsed by its own flags:
the config file, its `file.py:key=value` arguments and the `--config.x=y` overrides load
as the run would load them. The config is then checked for hosts x devices_per_host
devices (`validate_config`, the check every process of the run makes first), and the
hosts, devices, mesh, batch split, steps and examples seen are printed. Nothing is run.

A config that does not fit the devices ends the dry run with one line naming the field
(`error: ConfigError: train.batch_size: ...`) and exit code 2, as the run itself would.
Without --devices_per_host the devices are those JAX finds on this machine (a local run).
Run it from the repository root, as the launchers run the entry point.
"""
import argparse
import functools
import os
import sys


def _arguments(argv):
    """(this script's options, the entry point's argv) from `argv`, split at '--'."""
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, required=True,
                        help="hosts (processes) of the run; one process per host")
    parser.add_argument("--devices_per_host", type=int,
                        help="JAX devices per host; default: those of this machine")
    parser.add_argument("--host_kind", default="one process each",
                        help="what the hosts are, shown after their number")
    parser.add_argument("--device_kind", default="devices", help="what a device is, plural")
    parser.add_argument("--accelerator", help="a line on the accelerator, shown first")
    return parser.parse_args(argv[1:split]), [argv[0], *argv[split + 1:]]


def _report(options, argv):
    """Checks the parsed config for the devices and prints the arithmetic."""
    # Imported once main() has set JAX_PLATFORMS and sys.path.
    import jax  # pylint: disable=import-outside-toplevel
    from absl import app, flags  # pylint: disable=import-outside-toplevel

    from vlsa_jax import config_validation, sharding  # pylint: disable=import-outside-toplevel
    from vlsa_jax.config_lib import ConfigError  # pylint: disable=import-outside-toplevel

    FLAGS = flags.FLAGS  # pylint: disable=invalid-name
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    hosts = options.hosts
    if FLAGS.num_processes is not None and FLAGS.num_processes != hosts:
        raise app.UsageError(f"--num_processes={FLAGS.num_processes}, but the launch starts "
                             f"{hosts} processes")
    per_host = options.devices_per_host or jax.local_device_count()
    devices = hosts * per_host
    config = FLAGS.config
    config_validation.validate_config(config, devices)
    data, fsdp, tensor = sharding.resolve_mesh_shape(config.mesh, devices)

    # Training splits train.batch_size; evaluation and export split eval.batch_size.
    field = "train.batch_size" if FLAGS.mode == "train" else "eval.batch_size"
    batch = config.train.batch_size if FLAGS.mode == "train" else config.eval.batch_size
    if batch % hosts:
        raise ConfigError(field, f"{batch} is not divisible by the {hosts} hosts (each "
                          "process feeds batch / hosts rows)")
    shared = (f"; the {tensor} devices of a tensor group share their rows"
              if tensor > 1 else "")
    lines = [("accelerator", options.accelerator)] if options.accelerator else []
    lines += [
        ("mode", FLAGS.mode),
        ("hosts", f"{hosts} ({options.host_kind})"),
        ("devices", f"{devices} = {_count(hosts, 'host')} x {per_host} {options.device_kind}"),
        ("mesh", f"data {data} x fsdp {fsdp} x tensor {tensor} (config: data "
                 f"{config.mesh.data}, fsdp {config.mesh.fsdp}, tensor {config.mesh.tensor})"),
        ("global batch", f"{batch} ({field})"),
        ("per device", f"{batch // (data * fsdp)} = {batch} / {data * fsdp} "
                       f"(data x fsdp{shared})"),
        ("per host", f"{batch // hosts} = {batch} / {_count(hosts, 'host')}"),
    ]
    if FLAGS.mode == "train":
        steps = config.train.num_steps
        stop = config.train.stop_after_steps
        seen = batch * steps
        lines += [
            ("steps", f"{steps} (train.num_steps)" + (
                f"; this run stops after step {stop} (train.stop_after_steps)"
                if stop > 0 else "")),
            ("examples seen", f"{seen} = {batch} x {steps}"
                              + (f" ({seen / 1e6:.1f}M)" if seen >= 1e6 else "")),
        ]
    width = max(len(name) for name, _ in lines) + 2
    print("\n".join(f"{name + ':':<{width}}{value}" for name, value in lines))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def main():
    options, entry_argv = _arguments(sys.argv)
    if options.devices_per_host:
        # The devices are given: no accelerator of this machine is looked for.
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # As `python -m vlsa_jax.main` from this directory would import it.
    sys.path.insert(0, os.getcwd())
    # pylint: disable=import-outside-toplevel,unused-import
    from vlsa_jax import cli
    # Defines the entry point's flags: the arguments parse as the run's do.
    from vlsa_jax import main as _  # noqa: F401

    sys.argv = entry_argv
    cli.run(functools.partial(_report, options))


if __name__ == "__main__":
    main()
