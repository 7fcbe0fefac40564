"""Infer: a runner written in Python, named by the manifest's ``entry_point``.

``runner = "python"`` with ``entry_point = "MODULE:FACTORY"``. ``MODULE`` is a file of
the model's folder (``my_model`` or ``my_model.py`` for ``<folder>/my_model.py``) or, when
there is no such file, an installed module (``package.module``). ``FACTORY`` is called
with the manifest and the device and returns an object with the runner protocol's four
methods (:class:`~dicom_ai_node.infer.runner.Runner`): ``load``, ``preprocess``,
``predict``, ``postprocess``. The code runs inside the node with its rights: add only
models whose code you trust, as you would a plug-in.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from types import ModuleType

from ...errors import ConfigError
from ..manifest import ModelManifest
from ..runner import Device, Runner

__all__ = ["load_entry_point", "make_python_runner"]

_ENTRY = re.compile(r"^(?P<module>[A-Za-z_][\w.]*?)(?:\.py)?:(?P<attr>[A-Za-z_]\w*)$")
RUNNER_METHODS = ("load", "preprocess", "predict", "postprocess")


def _module(manifest: ModelManifest, module: str) -> ModuleType:
    path = manifest.folder / f"{module.replace('.', '/')}.py"
    if path.is_file():
        model = re.sub(r"\W", "_", manifest.name)
        name = f"dicom_ai_node_models.{model}.{module}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"model {manifest.name}: cannot import {path}")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        try:
            spec.loader.exec_module(loaded)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ConfigError(
                f"model {manifest.name}: importing {path.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return loaded
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"model {manifest.name}: entry point module {module!r} is neither a file of "
            f"{manifest.folder} nor installed: {exc}"
        ) from exc


def load_entry_point(manifest: ModelManifest) -> object:
    """The factory the manifest's ``entry_point`` names.

    Raises
    ------
    ConfigError
        When ``entry_point`` is missing or malformed, or its module or attribute is not
        found.
    """
    match = _ENTRY.match(manifest.entry_point)
    if match is None:
        raise ConfigError(
            f"model {manifest.name}: runner 'python' needs entry_point = 'MODULE:FACTORY', "
            f"got {manifest.entry_point!r}"
        )
    module = _module(manifest, match["module"])
    try:
        return getattr(module, match["attr"])
    except AttributeError:
        raise ConfigError(
            f"model {manifest.name}: {match['module']} has no {match['attr']!r}"
        ) from None


def make_python_runner(manifest: ModelManifest, device: Device) -> Runner:
    """Build the runner that the manifest's entry point makes (see the module's text).

    Raises
    ------
    ConfigError
        When the entry point cannot be found, or what it returns lacks a method of the
        runner protocol.
    """
    factory = load_entry_point(manifest)
    if not callable(factory):
        raise ConfigError(
            f"model {manifest.name}: entry point {manifest.entry_point} is not callable"
        )
    runner = factory(manifest, device)
    missing = [m for m in RUNNER_METHODS if not callable(getattr(runner, m, None))]
    if missing:
        raise ConfigError(
            f"model {manifest.name}: {manifest.entry_point} returned {type(runner).__name__}, "
            f"which lacks {missing} of the runner protocol"
        )
    return runner  # type: ignore[no-any-return]
