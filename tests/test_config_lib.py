"""Config-file arguments (`key=value,...`) converted by their defaults' types, and loading a
config file by its path."""
import pytest

from vlsa_jax import config_lib

_DEFAULTS = dict(variant="base", batch_size=256, remat=False, lr=1e-3)


def test_no_argument_gives_the_defaults():
    for arg in (None, "", ","):
        assert config_lib.parse_arg(arg, **_DEFAULTS).to_dict() == _DEFAULTS


def test_values_take_the_type_of_their_default():
    parsed = config_lib.parse_arg(" batch_size = 8 ,remat=TRUE,lr=5e-4,variant=tiny", **_DEFAULTS)
    assert parsed.to_dict() == dict(variant="tiny", batch_size=8, remat=True, lr=5e-4)
    assert type(parsed.batch_size) is int and type(parsed.lr) is float
    assert config_lib.parse_arg("lr=1", **_DEFAULTS).lr == 1.0
    assert type(config_lib.parse_arg("lr=1", **_DEFAULTS).lr) is float
    for text, value in (("true", True), ("1", True), ("False", False), ("0", False)):
        assert config_lib.parse_arg(f"remat={text}", remat=not value).remat is value


@pytest.mark.parametrize("arg, message", [
    ("batch_size=8.5", "config argument batch_size='8.5' is not of type int"),
    ("remat=yes", "config argument remat='yes' is not of type bool"),
    ("lr=fast", "config argument lr='fast' is not of type float"),
    ("depth=2", "unknown config argument 'depth'; declared: ['batch_size', 'lr', 'remat', "
                "'variant']"),
    ("variant", "config argument 'variant' is not of the form key=value"),
])
def test_bad_arguments_name_the_key(arg, message):
    with pytest.raises(ValueError) as error:
        config_lib.parse_arg(arg, **_DEFAULTS)
    assert str(error.value) == message


def test_a_config_file_is_loaded_by_its_path(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "from vlsa_jax import config_lib\n\n\n"
        "def get_config(arg=None):\n"
        "    return config_lib.parse_arg(arg, steps=1, name='x')\n")
    module = config_lib.load_config_module(path)
    assert module.__name__ == "mine_config"
    assert module.get_config("steps=3").to_dict() == {"steps": 3, "name": "x"}
