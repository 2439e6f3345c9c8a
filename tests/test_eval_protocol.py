"""What a retrieval evaluation scores: directions, split specs and which splits support them."""
import pytest

from vlsa_jax.eval_protocol import DIRECTIONS, parse_directions, parse_split_specs, supported


def test_split_specs_name_splits_and_their_distractors():
    specs = parse_split_specs("data/demo/test, data/demo/sync_hard+data/demo/shifted:a")
    assert [s.name for s in specs] == ["test", "sync_hard"]
    assert specs[1].distractor_path == "data/demo/shifted"
    assert specs[1].distractor_modalities == "a"
    for bad in ("a/test,b/test", "x+", "x+y:t"):
        with pytest.raises(ValueError):
            parse_split_specs(bad)


def test_directions_parse_in_order_and_unknown_ones_are_named():
    assert parse_directions(" t2v, va2t ,a2v,") == ("t2v", "va2t", "a2v")
    assert parse_directions(",".join(DIRECTIONS)) == tuple(DIRECTIONS)
    with pytest.raises(ValueError, match="'x2y'"):
        parse_directions("t2v,x2y")
    with pytest.raises(ValueError, match="comma-separated subset"):
        parse_directions(" , ")


def test_a_split_supports_the_directions_its_modalities_form():
    assert [d for d in DIRECTIONS if supported(d, "vt")] == ["t2v", "v2t"]
    assert [d for d in DIRECTIONS if supported(d, "at")] == ["t2a", "a2t"]
    assert [d for d in DIRECTIONS if supported(d, "av")] == ["v2a", "a2v"]
    # The fused directions need all three.
    assert [d for d in DIRECTIONS if supported(d, "avt")] == list(DIRECTIONS)


def test_split_specs_default_to_all_distractor_media_and_skip_empty_items():
    specs = parse_split_specs("a/val,, b/test+c/other ,")
    assert [(s.name, s.path, s.distractor_path, s.distractor_modalities) for s in specs] == [
        ("val", "a/val", None, "av"), ("test", "b/test", "c/other", "av")]
    with pytest.raises(ValueError, match="two splits are named 'test'"):
        parse_split_specs("a/test,b/test")
