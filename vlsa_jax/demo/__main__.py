r"""The demo: `python -m vlsa_jax.main` with `--config=configs/demo.py` as the default.

    python -m vlsa_jax.demo --workdir=workdirs/demo
    python -m vlsa_jax.demo --config=configs/demo.py:quick=true --workdir=workdirs/quick
"""
import pathlib

from absl import app

from vlsa_jax import main

# The repository's configs/demo.py (the package is installed in development mode).
DEMO_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "demo.py"

if __name__ == "__main__":
    main.FLAGS.set_default("config", str(DEMO_CONFIG))
    app.run(main.main)
