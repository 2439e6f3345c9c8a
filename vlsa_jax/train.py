"""Pre-training loop: `train_and_evaluate(config, workdir)`.

Read top to bottom: config and logging -> mesh -> input -> model and optimizer,
abstract -> shardings -> restore or sharded init -> the jitted step -> the loop.
"""
import contextlib
import json
import pathlib
import signal
import time
from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from vlsa_jax import checkpointing, evaluate, metric_writers, objective, optimizer, sharding
from vlsa_jax import pretrained
from vlsa_jax import state as state_lib
from vlsa_jax.config_validation import validate_config
from vlsa_jax.data.source import build_source


def train_step(state, batch, *, graphdef, tx, schedule, config):
    """One optimizer step on one global batch; returns (new state, float32 metrics)."""
    step_key = jax.random.fold_in(state["rng"], state["step"])

    def loss_fn(params):
        return objective.pretraining_loss(nnx.merge(graphdef, params), batch, step_key, config)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["param_norm"] = optax.tree.norm(params)
    metrics["learning_rate"] = schedule(state["step"])
    if isinstance(opt_state, optax.ApplyIfFiniteState):
        metrics["skipped_updates"] = opt_state.total_notfinite
    new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
                 "rng": state["rng"]}
    return new_state, metrics


class Preempted(Exception):
    """Training stopped on SIGTERM or SIGINT, after saving a checkpoint of the step reached.

    Running the same command again resumes from it. `exit_code` is what a command-line
    entry exits with: 0 for SIGTERM (a scheduler's preemption is no failure), 130 for
    SIGINT (Ctrl-C), as shells report it.
    """

    def __init__(self, step: int, signal_name: str):
        super().__init__(f"{signal_name}: stopped at step {step} with its checkpoint saved; "
                         "run the same command again to resume")
        self.step = step
        self.exit_code = 0 if signal_name == "SIGTERM" else 128 + signal.SIGINT


class _StopSignals:
    """Turns SIGTERM and SIGINT into a request to save and stop at the end of a step.

    On several processes (a pod), every process must stop at the same step, or the
    others hang in their next collective: SIGTERM is then left to JAX's preemption
    service, which tells every process the same step to save at
    (`reached_preemption_sync_point`), whichever process received it; SIGINT keeps its
    default. In one process, a second SIGINT interrupts at once.
    """

    def __init__(self):
        self._received: str | None = None
        self._several = jax.process_count() > 1
        handled = () if self._several else (signal.SIGTERM, signal.SIGINT)
        self._previous = {s: signal.signal(s, self._handle) for s in handled}

    def _handle(self, number, _):
        self._received = signal.Signals(number).name
        logging.warning("%s: saving a checkpoint of the current step, then stopping.",
                        self._received)
        if number == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def stop_after(self, step: int) -> str | None:
        """The signal to stop for after `step`, or None; every process calls it every step."""
        if self._several and multihost_utils.reached_preemption_sync_point(step):
            logging.warning("preemption: every process saves step %d, then stops.", step)
            return "SIGTERM"
        return self._received

    def restore(self):
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class Training(NamedTuple):
    """What the loop needs: the sharded state's abstract form and init, and the jitted step."""

    state: state_lib.ShardedState
    step: Callable  # (state, global batch) -> (state, metrics); donates the state
    seed_key: jax.Array
    graphdef: Any  # the model's structure, to merge with parameters


def setup_training(config: ml_collections.ConfigDict, mesh) -> Training:
    """Builds the model and optimizer abstractly, shards them by rule, and jits the step."""
    tx = optimizer.make_optimizer(config)
    schedule = optimizer.learning_rate_schedule(config.optim, config.train.num_steps)
    graphdef, _ = state_lib.model_structure(config)
    sharded = state_lib.sharded_state(config, tx, mesh)
    def step(state, batch):
        with sharding.activation_sharding(mesh, config.mesh.logical_axis_rules):
            return train_step(state, batch, graphdef=graphdef, tx=tx, schedule=schedule,
                              config=config)

    step = jax.jit(
        step,
        in_shardings=(sharded.shardings, sharding.batch_sharding(mesh)),
        out_shardings=(sharded.shardings, sharding.replicated(mesh)),
        donate_argnums=0)
    return Training(sharded, step, state_lib.seed_key_of(config), graphdef)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
    """Pre-trains (or resumes) in `workdir`; returns the final training state."""
    # ----------------------------------------------------------------------------
    # Config and logging: fail on a bad config before any work starts. The audio
    # normalisation left to the data is filled in (in place) before config.json records it.
    validate_config(config, jax.device_count())
    state_lib.resolve_audio_norm(config)
    workdir = pathlib.Path(workdir)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    writer = metric_writers.MetricWriter(str(workdir))

    # ----------------------------------------------------------------------------
    # Mesh: ('data', 'fsdp', 'tensor') over every device of every process.
    mesh = sharding.make_mesh(config.mesh)
    logging.info("mesh %s over %d devices", dict(mesh.shape), mesh.size)

    # ----------------------------------------------------------------------------
    # Input: this process's rows of each global batch.
    source = build_source(config, jax.process_index(), jax.process_count())

    # ----------------------------------------------------------------------------
    # Model, optimizer and update step: abstract shapes and shardings first, so
    # nothing is allocated unsharded; the step donates the state it replaces.
    training = setup_training(config, mesh)
    num_params = sum(x.size for x in jax.tree.leaves(training.state.abstract["params"]))
    logging.info("%s variant: %.2fM parameters", config.variant, num_params / 1e6)

    # ----------------------------------------------------------------------------
    # Restore the latest checkpoint, or initialise straight into the shardings.
    checkpointer = checkpointing.Checkpointer(str(workdir / "checkpoints"), config.checkpoint)
    state = checkpointer.restore_latest(training.state.abstract, source)
    if state is None:
        state = training.state.init(training.seed_key)
        # Public weights first (ViT / ViTMAE / BERT); a checkpoint of our own overrides them.
        state["params"] = pretrained.load_public_weights(config, state["params"])
        if config.init.checkpoint:
            state["params"] = state_lib.initial_params(
                config.init.checkpoint, state["params"], training.state.abstract["params"])
    else:
        logging.info("resuming from the checkpoint of step %d", int(state["step"]))

    # ----------------------------------------------------------------------------
    # Periodic retrieval evaluation: the sweep of --mode=eval on the live parameters.
    evaluator = None
    if config.eval.every_steps:
        evaluator = evaluate.Evaluator(
            config, mesh, training.graphdef,
            training.state.shardings["params"])

    # ----------------------------------------------------------------------------
    # The loop.
    first_step = int(state["step"])
    last_step = config.train.num_steps
    if config.train.stop_after_steps > 0:
        last_step = min(last_step, config.train.stop_after_steps)
    stop_signals = _StopSignals()
    timer = _IntervalTimer(first_step)
    try:
        for step in range(first_step + 1, last_step + 1):
            with timer.waiting_for_data():
                batch = sharding.global_batch(next(source), mesh)
            state, metrics = training.step(state, batch)
            if step == first_step + 1:
                timer.restart_after_compile(step, metrics)

            stopping = step == last_step
            log_now = step % config.train.log_every_steps == 0 or stopping
            save_now = step % checkpointer.every_steps == 0 or stopping
            if log_now or save_now:
                # Never log or save past a non-finite loss unnoticed.
                metrics = jax.device_get(metrics)
                _check_finite(metrics, step, config.train.on_nonfinite)
            if log_now:
                metrics.update(timer.lap(step, config.train.batch_size))
                writer.write(step, metrics)
                _log_progress(step, last_step, metrics)
            if save_now:
                checkpointer.save(step, state, source)
            if evaluator and (step % config.eval.every_steps == 0
                              or step == config.train.num_steps):
                results = evaluator.run(state["params"], step, workdir)
                writer.write(step, evaluate.as_scalars(results))
                evaluate.log_summary(results, step)
            # Read once, at the end: a signal that arrived during this step's data, fetch,
            # save or evaluation is answered by a checkpoint of this step, never skipped.
            stop_signal = stop_signals.stop_after(step)
            if stop_signal and not stopping:
                if not save_now:
                    _check_finite(jax.device_get(metrics), step, config.train.on_nonfinite)
                    checkpointer.save(step, state, source)
                raise Preempted(step, stop_signal)
    finally:
        stop_signals.restore()
        checkpointer.close()
        writer.close()
    return state


class _IntervalTimer:
    """Step time, throughput and time spent waiting for data, per logging interval."""

    def __init__(self, step: int):
        self._step, self._start, self._data_wait = step, time.perf_counter(), 0.0
        self._first_step_s = 0.0

    def restart_after_compile(self, step: int, metrics) -> None:
        """Starts the intervals after the run's first step, whose time is mostly
        compilation, so that step times and the ETA count steps alone."""
        jax.block_until_ready(metrics)
        self._first_step_s = time.perf_counter() - self._start
        logging.info("compiled and ran step %d in %.1f s", step, self._first_step_s)
        self._step, self._start, self._data_wait = step, time.perf_counter(), 0.0

    @contextlib.contextmanager
    def waiting_for_data(self):
        start = time.perf_counter()
        yield
        self._data_wait += time.perf_counter() - start

    def lap(self, step: int, batch_size: int) -> dict[str, float]:
        elapsed, steps = time.perf_counter() - self._start, step - self._step
        if steps == 0:  # logged right after the first step: that step is all there is
            elapsed, steps = self._first_step_s, 1
        out = {"step_time_s": elapsed / steps, "examples_per_s": steps * batch_size / elapsed,
               "data_wait_fraction": self._data_wait / elapsed}
        self._step, self._start, self._data_wait = step, time.perf_counter(), 0.0
        return out


def _check_finite(metrics, step: int, on_nonfinite: str) -> None:
    if on_nonfinite == "error" and not np.isfinite(metrics["loss"]):
        raise FloatingPointError(
            f"loss is {metrics['loss']} at step {step}; the last checkpoint holds the "
            "state before it (set train.on_nonfinite='skip' to drop such updates)")


def _log_progress(step: int, last_step: int, metrics) -> None:
    eta = (last_step - step) * metrics["step_time_s"]
    logging.info(
        "step %d/%d | loss %.4f (local %.4f, global %.4f) | %.3f s/step | %.1f ex/s | "
        "eta %dm%02ds", step, last_step, metrics["loss"], metrics["loss/local"],
        metrics["loss/global"], metrics["step_time_s"], metrics["examples_per_s"],
        eta // 60, eta % 60)
