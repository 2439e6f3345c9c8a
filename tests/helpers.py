"""Shared set-up for the training tests: the tiny config, meshes over the fake devices, and
the environment of a child process that runs an entry point."""
import os
import pathlib
import tempfile

import jax

from vlsa_jax import config_lib, sharding

ROOT = pathlib.Path(__file__).parents[1]
CONFIGS = ROOT / "configs"


def load_config(name: str = "pretrain.py", arg: str = "variant=tiny"):
    return config_lib.load_config_module(CONFIGS / name).get_config(arg)


def mesh_of(config, data: int, fsdp: int = 1, tensor: int = 1):
    """A mesh over the first data*fsdp*tensor devices, sized into `config.mesh`."""
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data, fsdp, tensor
    return sharding.make_mesh(config.mesh, jax.devices()[: data * fsdp * tensor])


def child_env(num_devices: int, optimize: bool = False) -> dict[str, str]:
    """The test session's JAX settings for a child process, with `num_devices` CPU devices;
    `optimize` compiles with XLA's optimisations, as users run (slower to compile)."""
    env = dict(os.environ)
    env.update({
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(num_devices),
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "0" if optimize else "1",
        "JAX_COMPILATION_CACHE_DIR": os.path.join(
            tempfile.gettempdir(), "vlsa_jax_test_compilation_cache"),
        "XLA_FLAGS": "",
    })
    return env
