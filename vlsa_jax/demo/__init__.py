"""The SyncShapes demo: a project on top of the vlsa_jax core, which never imports it.

    python -m vlsa_jax.demo --workdir=DIR        # = vlsa_jax.main --config=configs/demo.py
    python -m vlsa_jax.demo.sweep --config=configs/demo.py --grid=table5 --workdir=DIR
"""
