"""Shared set-up for the training tests: the tiny config and meshes over the fake devices."""
import pathlib

import jax

from vlsa_jax import config_lib, sharding

CONFIGS = pathlib.Path(__file__).parents[1] / "configs"


def load_config(name: str = "pretrain.py", arg: str = "variant=tiny"):
    return config_lib.load_config_module(CONFIGS / name).get_config(arg)


def mesh_of(config, data: int, fsdp: int = 1, tensor: int = 1):
    """A mesh over the first data*fsdp*tensor devices, sized into `config.mesh`."""
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data, fsdp, tensor
    return sharding.make_mesh(config.mesh, jax.devices()[: data * fsdp * tensor])
