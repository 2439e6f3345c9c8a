"""Installs vlsa_jax with the pinned versions of requirements.txt."""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _pins(text):
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _requirements():
    """(install, test) pins from requirements.txt: the test pins follow its '# [test]' line."""
    install, _, test = (_HERE / "requirements.txt").read_text().partition("# [test]")
    return _pins(install), _pins(test.partition("\n")[2])


_INSTALL, _TEST = _requirements()


setuptools.setup(
    name="vlsa_jax",
    version="0.1.0",
    description="Tri-modal video-audio-text pre-training with synchronized audio (VLSA) in JAX/Flax.",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["vlsa_jax", "vlsa_jax.*"]),
    install_requires=_INSTALL,
    extras_require={
        "test": _TEST,
        # Accelerator builds of the same JAX release.
        "cuda12": ["jax[cuda12]==0.10.2"],
        "tpu": ["jax[tpu]==0.10.2"],
        # benchmarks/retrieval.py compares the block-wise ranking with faiss exact search.
        "bench": ["faiss-cpu==1.15.1"],
    },
)
