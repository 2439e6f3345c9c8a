r"""The demo: `python -m vlsa_jax.main` with `--config=configs/demo.py` as the default.

    python -m vlsa_jax.demo --workdir=workdirs/demo
    python -m vlsa_jax.demo --config=configs/demo.py:quick=true --workdir=workdirs/quick
"""
from vlsa_jax import cli, main
from vlsa_jax.demo import run

if __name__ == "__main__":
    main.FLAGS.set_default("config", str(run.CONFIG_FILE))
    cli.run(main.main)
