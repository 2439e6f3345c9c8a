"""Installs vlsa_jax with the pinned versions of requirements.txt."""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements():
    lines = (_HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setuptools.setup(
    name="vlsa_jax",
    version="0.1.0",
    description="Tri-modal video-audio-text pre-training with synchronized audio (VLSA) in JAX/Flax.",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["vlsa_jax", "vlsa_jax.*"]),
    install_requires=_requirements(),
    extras_require={
        "test": ["pytest==9.0.3", "pytest-xdist==3.8.0"],
        # Accelerator builds of the same JAX release.
        "cuda12": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
    },
)
