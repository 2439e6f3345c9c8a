"""The jobs of `--mode`: train, eval and export, or those of the runner a config names."""
import importlib

from vlsa_jax import evaluate, export, train

MODES = ("train", "eval", "export")


def run(config, workdir: str, mode: str):
    """Runs `mode` on `config` in `workdir`.

    A config whose `runner` is 'module:function' is run by `function(config, workdir,
    mode)`: a project on top of the core (the demo prepares its own corpus first)
    without the core knowing of it. Otherwise the core's own job runs.
    """
    if config.runner:
        module, _, function = config.runner.partition(":")
        return getattr(importlib.import_module(module), function)(config, workdir, mode)
    return run_core(config, workdir, mode)


def run_core(config, workdir: str, mode: str):
    """train: pre-train or fine-tune, resuming in `workdir`; eval: the retrieval sweep of
    `config.eval` on a checkpoint; export: its embeddings of the `config.eval` splits."""
    if mode == "train":
        return train.train_and_evaluate(config, workdir)
    if mode == "eval":
        return evaluate.evaluate_checkpoint(config, workdir)
    if mode == "export":
        return export.export_checkpoint(config, workdir)
    raise ValueError(f"mode {mode!r} is not one of {MODES}")
