"""Config-file helpers: big_vision-style arguments (`file.py:variant=tiny,batch_size=8`)."""
import importlib.util
import pathlib
from types import ModuleType
from typing import Any

import ml_collections


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses `key=value,key=value` against declared defaults.

    Every key must be declared in `defaults`; its value is converted to the type
    of the default, so `batch_size=8` is an int and `remat=true` a bool.

    Raises:
      ValueError: naming the key that is unknown or whose value has the wrong type.
    """
    parsed = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"config argument {item!r} is not of the form key=value")
        if key not in defaults:
            raise ValueError(
                f"unknown config argument {key!r}; declared: {sorted(defaults)}")
        parsed[key] = _convert(key, value.strip(), defaults[key])
    return ml_collections.ConfigDict(parsed)


def _convert(key: str, value: str, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        return kind(value)
    except ValueError:
        raise ValueError(
            f"config argument {key}={value!r} is not of type {kind.__name__}") from None


def load_config_module(path: str | pathlib.Path) -> ModuleType:
    """Imports a `get_config(arg)` file by its path."""
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem + "_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ConfigError(ValueError):
    """A config field holds a value the run cannot use.

    The message is `"<dotted field>: <problem>"`; `field` holds the field alone.
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def __reduce__(self):
        # The default would call ConfigError(message) and fail to unpickle.
        return type(self), (self.field, self.problem)
