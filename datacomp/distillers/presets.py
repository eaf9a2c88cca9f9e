"""Building a distiller's configuration: a named preset of the method, measured per-dataset adjustments, the
caller's overrides; and reading configs recorded in checkpoints and ``run.json`` files.

The presets themselves are registered with each method in :mod:`datacomp.distillers.methods` (which documents them);
``PRESETS[method][name]`` is a read-only view of them. Every field can be overridden (``dataclasses.replace`` or the
CLI's ``--set key=value``); the whole config is recorded in the output metadata.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

from datacomp.distillers.configs import DMConfig, NCFMConfig, RandomConfig, resolve_native_bf16, switch_value
from datacomp.distillers.methods import DISTILLERS
from datacomp.errors import ConfigError

__all__ = ["NCFMConfig", "DMConfig", "RandomConfig", "PRESETS", "METHODS", "DATASET_ADJUSTMENTS", "BEFORE_RECORDED",
           "get_config", "config_from_dict", "config_dict", "preset_differences", "switch_value",
           "resolve_native_bf16"]

Config = NCFMConfig | DMConfig | RandomConfig

PRESETS = MappingProxyType({e.name: MappingProxyType(e.info["presets"]) for e in DISTILLERS.entries()})
METHODS = tuple(DISTILLERS.names())
DATASET_ADJUSTMENTS = MappingProxyType({(e.name, preset): values for e in DISTILLERS.entries()
                                        for preset, values in e.info["adjustments"].items()})
BEFORE_RECORDED = MappingProxyType({e.name: e.info["before_recorded"] for e in DISTILLERS.entries()
                                    if e.info["before_recorded"]})


def _coerce(value: Any, like: Any, key: str) -> Any:
    """Parse ``value`` (possibly a CLI string) into the type of the field's current value ``like``."""
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be a boolean (true/false), got {value!r}")
    try:
        if isinstance(like, int):
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if isinstance(like, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key} must be a {type(like).__name__}, got {value!r}") from None
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{key} must be a {type(like).__name__}, got {value!r}")
    return str(value)


def get_config(method: str, preset: str = "cpu-quick", dataset: str | None = None, ipc: int | None = None,
               **overrides: Any) -> Config:
    """The named preset of ``method`` with ``overrides`` applied (strings are parsed to the field's type).

    ``dataset`` (a registry name) applies the preset's measured adjustments first: the dataset's entry, then the
    ``(dataset, ipc)`` entry when ``ipc`` is given (as the released code's per-IPC configs).

    Raises:
        ConfigError: unknown method, preset or field, or an invalid value.
    """
    entry = DISTILLERS.entry(method)
    presets = entry.info["presets"]
    if preset not in presets:
        raise ConfigError(f"--preset: unknown preset {preset!r} for method {method!r}; choose one of "
                          f"{', '.join(presets)}")
    base = presets[preset]
    adjustments = entry.info["adjustments"].get(preset, {})
    adjusted = {**adjustments.get(dataset or "", {}), **adjustments.get((dataset or "", ipc), {})}
    base = dataclasses.replace(base, **adjusted)
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"--set: unknown {method} setting(s) {unknown}; valid settings: {', '.join(sorted(names))}")
    parsed = {k: _coerce(v, getattr(base, k), k) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **parsed)


def config_from_dict(method: str, values: dict[str, Any]) -> Config:
    """Rebuild a config from :func:`config_dict` output stored in a checkpoint or ``run.json``.

    A record written before a field existed gets the value such runs actually had (the method's
    ``before_recorded``, else the field's default); older spellings (``cf_bf16`` as a bool) normalise through the
    config class.

    Raises:
        ConfigError: if the record names another method, an unknown field, or an invalid value.
    """
    values = dict(values)
    recorded_method = values.pop("method", method)
    if recorded_method != method:
        raise ConfigError(f"the stored config is for method {recorded_method!r}, not {method!r}")
    return get_config(method, "paper", **{**DISTILLERS.entry(method).info["before_recorded"], **values})


def config_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config, with its method."""
    return {"method": cfg.method, **dataclasses.asdict(cfg)}


def preset_differences(method: str) -> dict[str, dict[str, Any]]:
    """Per preset, the fields that differ from the ``paper`` preset (for tests and docs)."""
    paper = dataclasses.asdict(PRESETS[method]["paper"])
    return {
        name: {k: v for k, v in dataclasses.asdict(cfg).items() if paper[k] != v}
        for name, cfg in PRESETS[method].items()
    }
