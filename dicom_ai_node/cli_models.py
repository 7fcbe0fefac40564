"""Wiring: the model and routing commands (``models list``, ``models add``, ``route explain``).

``models add`` validates and tries a model folder before it installs it, and says which
rule routes to it; ``route explain`` shows, for a folder of DICOM files, which model each
series would go to and why, as the node decides it (the image classifier included).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from .domain import InputSpec, SeriesInfo
from .errors import ConfigError
from .identity import made_by_node
from .settings import NodeSettings

if TYPE_CHECKING:
    from .infer.bodyregion import BodyRegionModels
    from .infer.manifest import ModelManifest
    from .route.rules import RuleSet

__all__ = ["add_model_commands", "scan_series"]

#: A command of this module: the parsed arguments and the settings, the exit status back.
Handler = Callable[[argparse.Namespace, NodeSettings], int]


def cmd_models_list(args: argparse.Namespace, settings: NodeSettings) -> int:
    """List the models found, with version, device, warm/cold and intended use."""
    from .infer.registry import ModelRegistry, choose_device

    device = choose_device(settings.infer.device, settings.infer.threads, settings.infer.bf16)
    registry = ModelRegistry(settings.path(settings.infer.models_dir), device)
    if not len(registry) and not registry.unavailable:
        print("no models found")
    for m in registry:
        state = "warm" if registry.is_warm(m.name) else "cold (loads at start)"
        print(f"{m.name} {m.version}  task={m.task} runner={m.runner} device={device.kind} {state}")
        print(
            f"    input: modalities={sorted(m.input.modalities)} "
            f"body parts={sorted(m.input.body_parts)}"
        )
        print(f"    intended use: {m.intended_use}")
    for name, reason in sorted(registry.unavailable.items()):
        print(f"{name}  unavailable: {reason} (its routing rules are skipped)")
    for region in registry.body_regions:
        print(f"{region.name} {region.version}  task={region.task} (asked by routing) device=cpu")
        print(f"    input: modalities={sorted(region.input.modalities)}")
        print(f"    intended use: {region.intended_use}")
    return 0


def scan_series(folder: Path) -> dict[str, list[Path]]:
    """Group the DICOM files under a folder by Series Instance UID (headers only)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "SeriesInstanceUID" in ds:
            groups[str(ds.SeriesInstanceUID)].append(path)
    return groups


def _explain(
    path: Path,
    rules: RuleSet,
    specs: Mapping[str, InputSpec],
    calling_ae: str,
    body_region: BodyRegionModels | None = None,
) -> int:
    """Print the routing of each study under ``path``; 1 when there is no DICOM series.

    With ``body_region``, series whose headers name no region are classified from their
    pixels, as the node does.
    """
    from .route.bodypart import RegionAnswers, needs_image_answer
    from .route.explain import format_study_routing
    from .route.header import header_of, series_info
    from .route.router import route_study

    groups = scan_series(path)

    def answers(infos: list[SeriesInfo]) -> RegionAnswers | None:
        """The image classifier's answers where the headers leave the region open."""
        if body_region is None:
            return None
        return RegionAnswers(
            {
                i.series_instance_uid: body_region.classify_files(groups[i.series_instance_uid])
                for i in infos
                if made_by_node(i.header) is None and needs_image_answer(i)
            }
        )

    by_study: dict[str, list[SeriesInfo]] = defaultdict(list)
    for _uid, paths in groups.items():
        first = dcmread(paths[0], stop_before_pixels=True)
        classes = {
            str(dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"]).SOPClassUID)
            for p in paths
        }
        info = series_info(
            header_of(first),
            number_of_instances=len(paths),
            sop_class_uids=classes,
            calling_ae_title=calling_ae,
        )
        by_study[info.study_instance_uid].append(info)
    if not by_study:
        print(f"no DICOM series under {path}")
        return 1
    for infos in by_study.values():
        print(format_study_routing(route_study(infos, rules, specs, answers(infos))))
    return 0


def cmd_route_explain(args: argparse.Namespace, settings: NodeSettings) -> int:
    """Print which model each series under PATH would go to, and why."""
    from .infer.registry import ModelRegistry, choose_device
    from .route.load import load_rules

    registry = ModelRegistry(settings.path(settings.infer.models_dir), choose_device("cpu"))
    rules = load_rules(
        Path(args.rules) if args.rules else settings.path(settings.route.rules_file),
        list(registry.manifests),
        registry.unavailable,
    )
    return _explain(
        Path(args.path), rules, registry.specs, args.calling_ae or "", registry.body_region_model()
    )


def _add_rule(rules_path: Path, manifest: ModelManifest, known: list[str]) -> str:
    """Append a rule from the model's declared input to the rules file (validated first)."""
    from .durable import fsync_dir, fsync_file
    from .route.load import load_rules
    from .route.suggest import rule_for

    text = rules_path.read_text("utf-8")
    names = {rule.name for rule in load_rules(text, known)}
    name = manifest.name
    for n in range(2, 100):
        if name not in names:
            break
        name = f"{manifest.name}-{n}"
    rule = rule_for(manifest.name, manifest.input, name)
    base = text if names else re.sub(r"(?m)^rules:\s*\[\s*\]\s*$", "rules:", text)
    new = base.rstrip("\n") + "\n\n" + rule
    try:
        load_rules(new, known)  # a rules file the node would refuse is never written
    except ConfigError as exc:
        raise ConfigError(
            f"cannot append a rule to {rules_path} (the 'rules:' list must end the file): "
            f"{exc}\nadd it by hand:\n{rule}"
        ) from None
    temp = rules_path.with_name(f".{rules_path.name}.new")
    temp.write_text(new, "utf-8")
    fsync_file(temp)
    temp.replace(rules_path)
    fsync_dir(rules_path.parent)
    return name


def cmd_models_add(args: argparse.Namespace, settings: NodeSettings) -> int:
    """Validate, load and try a model folder, install it, and say what routes to it."""
    from .errors import InferenceError
    from .infer.install import install_model, try_model
    from .infer.registry import ModelRegistry, choose_device
    from .route.load import load_rules

    device = choose_device(settings.infer.device, settings.infer.threads, settings.infer.bf16)
    folder = Path(args.path)
    try:
        trial = try_model(folder, device)
    except InferenceError as exc:
        print(f"model check failed: {exc}", file=sys.stderr)
        return 1
    for line in trial.lines():
        print(line)
    manifest = trial.manifest
    models_dir = settings.path(settings.infer.models_dir)
    rules_path = settings.path(settings.route.rules_file)
    if args.check:
        print("checked only (--check): nothing installed")
        return 0
    target = install_model(folder, models_dir, replace=args.replace)
    print(f"installed in {target}")
    registry = ModelRegistry(models_dir, device)
    known = [*registry.manifests, *registry.unavailable]  # rules may name either
    if args.add_rule:
        name = _add_rule(rules_path, manifest, known)
        print(f"added rule {name!r} to {rules_path} (from the model's declared input; edit it)")
    rules = load_rules(rules_path, known, registry.unavailable)
    routing = [r for r in rules if r.model == manifest.name and r.enabled]
    for rule in routing:
        print(f"routed by rule {rule.name!r} of {rules_path}")
    if not routing:
        print(
            f"no rule of {rules_path} routes to {manifest.name} yet: add one "
            "(docs/routing.md), or run again with --add-rule --replace"
        )
    if args.study:
        _explain(Path(args.study), rules, registry.specs, "", registry.body_region_model())
    print("restart the node to load it")
    return 0


def add_model_commands(
    sub: Any, bind: Callable[[Handler], Callable[[argparse.Namespace], int]]
) -> None:
    """Add ``models`` and ``route`` to the command line; ``bind(handler)`` gives it the settings."""
    models = sub.add_parser("models", help="model registry").add_subparsers(
        dest="models_cmd", required=True
    )
    models.add_parser("list", help="list models").set_defaults(func=bind(cmd_models_list))
    p = models.add_parser("add", help="validate, try and install a model folder")
    p.add_argument("path", help="the model's folder, holding model.toml")
    p.add_argument("--check", action="store_true", help="validate and try it only")
    p.add_argument("--replace", action="store_true", help="replace a model of the same name")
    p.add_argument("--add-rule", action="store_true", help="append a rule from its input")
    p.add_argument("--study", help="a folder of DICOM files: explain how it would route")
    p.set_defaults(func=bind(cmd_models_add))
    route = sub.add_parser("route", help="routing").add_subparsers(dest="route_cmd", required=True)
    p = route.add_parser("explain", help="explain routing for a folder of DICOM files")
    p.add_argument("path")
    p.add_argument("--rules", help="rules file (default from settings)")
    p.add_argument("--calling-ae", default="", help="pretend the study came from this AE title")
    p.set_defaults(func=bind(cmd_route_explain))
