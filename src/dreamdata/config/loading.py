"""Building a :class:`RunConfig` from YAML files, presets and ``section.key=value`` overrides.

The layers are: dataclass defaults (``dreamdata.config.sections``) <- a YAML file or shipped preset <-
overrides on the command line. Every value is type-checked against its dataclass field as it is built, and
every error names the key and value, so YAML files, overrides and sweep/study files all fail the same way.
"""

from __future__ import annotations

import dataclasses
import math
import types
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from dreamdata.config.sections import RunConfig
from dreamdata.config.validation import validate
from dreamdata.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} on lines {seen[key]} and {line} of the same mapping")
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(text: str, origin: str) -> Any:
    """Parse config YAML safely, with a ConfigError naming ``origin`` for invalid YAML or a duplicated key."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin}: not valid YAML: {error}") from None
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from None


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    folder = resources.files("dreamdata") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_config_file(path_or_preset: str) -> dict[str, Any]:
    """Read a YAML file, or a shipped preset by name (``fashion-mnist``, ``tiny``...)."""
    path = Path(path_or_preset).expanduser()
    if path.is_file():
        text = path.read_text()
        origin = str(path)
    elif path_or_preset in preset_names():
        text = (resources.files("dreamdata") / "presets" / f"{path_or_preset}.yaml").read_text()
        origin = f"preset {path_or_preset!r}"
    else:
        raise ConfigError(f"config {path_or_preset!r}: no such file, and not a preset name "
                          f"(presets: {', '.join(preset_names())})")
    loaded = load_yaml(text, origin)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections at the top level, got {type(loaded).__name__}")
    return loaded


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.key=value`` and parse the value as YAML (so ``3``, ``1e-4``, ``[1,2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.steps=1000")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted_key`` "a.b", creating sections on the way."""
    parts = dotted_key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted_key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a dataclass field's type, converting int -> float where harmless."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:  # Optional[int] and int | None alike
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        (item_type,) = get_args(annotation)
        return [_coerce(item, item_type, key) for item in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # nan and inf: no setting means them, and nan != nan breaks resume checks
                raise ConfigError(f"config key {key}: expected a finite number, got {value!r}")
            return number
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is Any:
        return value
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"config key {key}: expected {type_name}, got {value!r}")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Build the (nested) config dataclass ``cls`` from a plain mapping, type-checking every value.

    Missing keys take the dataclass defaults; an unknown key or a mistyped value is a ConfigError naming
    ``prefix + key`` (e.g. ``train.lr``), so YAML files, overrides and study files all fail the same way.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<top>'}: expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known keys in this section: "
                          f"{', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = build_dataclass(annotation, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, annotation, f"{prefix}{name}")
    return cls(**kwargs)


def merge_trees(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` laid over it, recursively for nested sections."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_trees(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_tree(path_or_preset: Optional[str], overrides: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML file or preset (``{}`` for none) with ``section.key=value`` overrides applied."""
    tree: dict[str, Any] = read_config_file(path_or_preset) if path_or_preset else {}
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    return tree


def load_config(path_or_preset: Optional[str] = None, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Resolve a RunConfig: dataclass defaults <- YAML file or preset <- ``key=value`` overrides."""
    config = build_dataclass(RunConfig, config_tree(path_or_preset, overrides), "")
    validate(config)
    return config


def config_from_dict(tree: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from its ``to_dict`` form (e.g. the config saved in a run directory)."""
    config = build_dataclass(RunConfig, tree, "")
    validate(config)
    return config


def merge_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``key=value`` overrides on top of an existing config (used by ``--resume``)."""
    tree = config.to_dict()
    for text in overrides:
        key, value = parse_override(text)
        update: dict[str, Any] = {}
        set_dotted(update, key, value)
        tree = merge_trees(tree, update)
    return config_from_dict(tree)
