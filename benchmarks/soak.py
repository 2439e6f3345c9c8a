r"""Soak test of resumption: the quick demo killed at random moments ends as an uninterrupted run.

    python benchmarks/soak.py --workdir=/tmp/soak            # 5 SIGKILLs, 2 SIGTERMs
    python benchmarks/soak.py --workdir=/tmp/soak --kills=2 --terms=1 --seed=1

Runs `python -m vlsa_jax.main --config=configs/demo.py:quick=true` twice on one corpus:
once uninterrupted (DIR/reference), once (DIR/soak) started again after each of
`--kills` SIGKILLs and `--terms` SIGTERMs sent in a random order, each a random number of
seconds after that start's first step (compilation excluded), then run to its end. Checkpoints every 20 steps and a retrieval
sweep every 50 make every moment of the loop a candidate (data, step, save, evaluation).
It then compares every figure the two runs logged (metrics.jsonl, less the timings, and
eval/<split>/metrics.json) and prints one line per interruption, the verdict, and a JSON
record. Not part of the test suite: it takes about 10 minutes on 2 cores.
"""
import json
import pathlib
import random
import signal
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where the corpus, both runs and the report go.")
flags.DEFINE_integer("kills", 5, "SIGKILLs to send.")
flags.DEFINE_integer("terms", 2, "SIGTERMs to send.")
flags.DEFINE_integer("seed", 0, "Seed of the order and the moments of the signals.")
flags.DEFINE_float("min_delay", 0.0, "Shortest time from a start's first step to its "
                   "signal, seconds.")
flags.DEFINE_float("max_delay", 30.0, "Longest time from a start's first step to its "
                   "signal, seconds.")
flags.mark_flag_as_required("workdir")

_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Figures that measure the machine, not the run.
_TIMINGS = {"step_time_s", "examples_per_s", "data_wait_fraction"}


def _command(workdir: pathlib.Path, data_dir: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "vlsa_jax.main", "--config=configs/demo.py:quick=true",
            f"--workdir={workdir}", f"--config.demo.data_dir={data_dir}",
            "--config.demo.pictures=false", "--config.demo.eval_every_steps=50",
            "--config.checkpoint.every_steps=20"]


def _latest_checkpoint(workdir: pathlib.Path) -> int | None:
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=None)


def _figures(workdir: pathlib.Path) -> dict[str, float]:
    """Every logged figure of a run: 'step/name' from metrics.jsonl, less the timings, and
    'eval/split/name' from the final sweep."""
    figures = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        step = record.pop("step")
        figures.update({f"{step}/{name}": value for name, value in record.items()
                        if name not in _TIMINGS})
    for path in sorted((workdir / "eval").glob("*/metrics.json")):
        scores = json.loads(path.read_text())
        figures.update({f"eval/{path.parent.name}/{name}": value
                        for name, value in scores.items()})
    return figures


def _wait_for_training(process, log_path: pathlib.Path, start: int) -> None:
    """Returns once the run has compiled and taken its first step (or has ended), so
    that the signal's delay counts training time, whatever the compilation took."""
    while process.poll() is None:
        with open(log_path, "rb") as log:
            log.seek(start)
            if b"compiled and ran step" in log.read():
                return
        time.sleep(0.5)


def _run(command, log) -> int:
    return subprocess.run(command, cwd=_ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


def main(argv):
    del argv
    root = pathlib.Path(FLAGS.workdir)
    root.mkdir(parents=True, exist_ok=True)
    data_dir, reference, soak = root / "data", root / "reference", root / "soak"
    with open(root / "reference.log", "w") as log:
        start = time.perf_counter()
        if _run(_command(reference, data_dir), log):
            sys.exit(f"the uninterrupted run failed: see {root / 'reference.log'}")
        reference_seconds = time.perf_counter() - start

    rng = random.Random(FLAGS.seed)
    signals = [signal.SIGKILL] * FLAGS.kills + [signal.SIGTERM] * FLAGS.terms
    rng.shuffle(signals)
    interruptions = []
    with open(root / "soak.log", "w") as log:
        for number in signals:
            delay = rng.uniform(FLAGS.min_delay, FLAGS.max_delay)
            before = _latest_checkpoint(soak)
            log.flush()
            start = (root / "soak.log").stat().st_size
            process = subprocess.Popen(_command(soak, data_dir), cwd=_ROOT, stdout=log,
                                       stderr=subprocess.STDOUT)
            _wait_for_training(process, root / "soak.log", start)
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(number)
            code = process.wait()
            interruptions.append({
                "signal": signal.Signals(number).name, "after_s": round(delay, 1),
                "exit_code": code, "resumed_from": before,
                "checkpoint_after": _latest_checkpoint(soak)})
            print(f"{interruptions[-1]['signal']:>7} after {delay:5.1f} s: exit {code:>4}, "
                  f"checkpoints {before} -> {interruptions[-1]['checkpoint_after']}",
                  flush=True)
        final_code = _run(_command(soak, data_dir), log)

    expected, got = _figures(reference), _figures(soak)
    differing = sorted(k for k in expected.keys() | got.keys()
                       if expected.get(k) != got.get(k))
    record = {"interruptions": interruptions, "final_exit_code": final_code,
              "figures_compared": len(expected), "differing": differing[:20],
              "num_differing": len(differing), "reference_seconds": reference_seconds,
              "equal": final_code == 0 and not differing}
    (root / "soak.json").write_text(json.dumps(record, indent=2))
    print(f"{len(expected)} figures of the uninterrupted run; after {len(signals)} "
          f"interruptions and a final run (exit {final_code}): "
          + ("every figure equal" if record["equal"] else
             f"{len(differing)} differ, e.g. {differing[:5]}"))
    print(json.dumps(record))
    sys.exit(0 if record["equal"] else 1)


if __name__ == "__main__":
    app.run(main)
