"""Parameter counts of the variants and ablations, from the abstract model (nothing allocated)."""
import jax
from flax import nnx

from tests import test_model
from tests.test_model import _config
from vlsa_jax.param_count import PARTS, count_parameters

# The tiny config and a concrete model built from it (tests/test_model.py).
tiny = test_model.tiny


def test_base_parameter_count_matches_paper():
    counts = count_parameters(_config("base"))
    # The paper reports 156M; heads and embeddings differ in small details.
    assert 140e6 <= counts["total"] <= 175e6, counts
    assert counts["total"] == sum(counts[part] for part in PARTS)


def test_variants_are_ordered_by_size():
    totals = [count_parameters(_config(v))["total"] for v in ("tiny", "small", "base")]
    assert totals == sorted(set(totals)), totals


def test_abstract_count_equals_allocated(tiny):
    config, model = tiny
    allocated = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count_parameters(config)["total"] == allocated


def test_separate_encoders_have_more_parameters():
    shared = count_parameters(_config(overrides={"model.joint_modalities": "avt"}))
    separate = count_parameters(_config(overrides={"model.joint_modalities": "none"}))
    # Three identical stacks instead of one; nothing else changes.
    assert separate["encoders"] == 3 * shared["encoders"]
    assert separate["total"] - shared["total"] == 2 * shared["encoders"]


def test_parts_absent_without_their_loss():
    config = _config(overrides={
        "loss.lpmm": False, "loss.gam": False, "loss.vtm": True,
        "loss.learnable_temperature": True})
    counts = count_parameters(config)
    assert counts["decoders"] == counts["decoder_inputs"] == counts["heads"] == 0
    assert counts["matching_heads"] > 0
    assert counts["other"] == 1  # the log-temperature
