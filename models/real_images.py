"""Models: what the node does with every real image it can read offline, and what each
model then says.

For each real image (:mod:`models.real_image_list`) this prints what its headers say, the
answer of the body-region model of its modality, where the built-in rules send it (the
node's router and ``models/rules.yaml`` as ``dicom-ai-node route explain`` uses them: the
image classifier decides only where the headers leave the region open), and what each
model of its modality reports through the node's own runner (load_volume, preprocess,
predict, postprocess): the models it is routed to, and the others as a "what if", since a
model that finds something on the wrong body part is what routing must keep it from.

A **confident finding** is a positive answer by the model's own threshold: a classifier's
label present (probability at or above ``postprocess.threshold``), a lesion, nodule,
aneurysm or calcification cluster reported (after the model's own size rules), or an
MTA-style grade of 2 or more (the card's "usually called abnormal").

Usage (from the repository's root)::

    python -m models.real_images                     # plain text, one block per image
    python -m models.real_images --markdown          # the tables the model cards quote
    python -m models.real_images --markdown --model cxr-abnormal
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dicom_ai_node.domain import ModelOutput
from dicom_ai_node.errors import InferenceError
from dicom_ai_node.infer.bodyregion import BodyRegionModels
from dicom_ai_node.infer.manifest import ModelManifest
from dicom_ai_node.infer.registry import ModelRegistry
from dicom_ai_node.infer.runner import Device
from dicom_ai_node.infer.volume import load_volume
from dicom_ai_node.route.bodypart import RegionAnswers, needs_image_answer
from dicom_ai_node.route.header import header_of, series_info
from dicom_ai_node.route.load import load_rules
from dicom_ai_node.route.router import SeriesRouting, route_study
from dicom_ai_node.route.rules import RuleSet

from .real_image_list import (
    RealImage,
    pydicom_images,
    real_images,
    volume_images,
    without_region_headers,
)

__all__ = [
    "Answer",
    "ImageReport",
    "Reader",
    "RealImage",
    "can_find",
    "describe",
    "main",
    "markdown",
    "pydicom_images",
    "real_images",
    "volume_images",
    "without_region_headers",
]

HERE = Path(__file__).resolve().parent
#: Abnormal from this MTA-style grade on (models/mr_brain_atrophy/MODEL_CARD.md).
MTA_FINDING = 2.0


@dataclass(frozen=True)
class Answer:
    """What one model reported on one image."""

    model: str
    routed: bool
    report: str
    #: A confident positive finding by the model's own threshold.
    finding: bool
    #: The image shows none of the body parts the model reads.
    wrong_region: bool


@dataclass(frozen=True)
class ImageReport:
    """Routing and model answers for one real image."""

    image: RealImage
    modality: str
    headers: str
    region_model: str
    routing: SeriesRouting
    answers: tuple[Answer, ...]

    @property
    def routed(self) -> tuple[str, ...]:
        """The models the node runs on the image."""
        return self.routing.models


def _finding_label(name: str, kinds: Sequence[str]) -> bool:
    """Whether an output label is one reported finding ("Nodule 2", "Cyst 1" ...)."""
    head, _, number = name.rpartition(" ")
    return number.isdigit() and head in kinds


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _values(output: ModelOutput, value: int) -> list[str]:
    return [
        f"{m.concept.meaning} {_number(m.value)}{'' if m.unit.value == '1' else ' ' + m.unit.value}"
        for m in output.measurements
        if m.label_value == value
    ]


def can_find(manifest: ModelManifest) -> bool:
    """Whether a model can report a confident finding at all (see :func:`describe`)."""
    ratios = manifest.postprocess.get("ratios")
    graded = isinstance(ratios, list) and any(isinstance(r, dict) and "grades" in r for r in ratios)
    return (
        manifest.task == "classification"
        or any(label.instances for label in manifest.labels)
        or "clusters" in manifest.postprocess
        or graded
    )


def _classified(manifest: ModelManifest, output: ModelOutput) -> tuple[str, bool]:
    threshold = float(manifest.postprocess.get("threshold", 0.5))
    parts = []
    found = False
    for label in output.labels:
        present = any(
            e.label_value == label.value and e.value.meaning == "Present"
            for e in output.evaluations
        )
        found |= present
        p = [f" {m.value:.2f}" for m in output.measurements if m.label_value == label.value]
        answer = "present" if present else "absent"
        parts.append(f"{label.name}{''.join(p[:1])} ({answer} at {threshold:g})")
    return "; ".join(parts), found


def _segmented(manifest: ModelManifest, output: ModelOutput) -> tuple[str, bool]:
    kinds = [label.name for label in manifest.labels if label.instances]
    clusters = manifest.postprocess.get("clusters")
    if isinstance(clusters, dict) and "name" in clusters:
        kinds.append(str(clusters["name"]))
    seen: set[int] = set()
    if output.label_map is not None:
        seen = {int(v) for v in np.unique(output.label_map)}
    parts: list[str] = []
    findings: list[str] = []
    for label in output.labels:
        values = _values(output, label.value)
        if _finding_label(label.name, kinds):
            site = f" in {label.finding_site.meaning}" if label.finding_site else ""
            findings.append(f"{label.name}{site} ({', '.join(values[:2])})")
        elif label.value in seen or values:
            parts.append(f"{label.name}: {', '.join(values[:3]) or 'found'}")
        else:
            parts.append(f"{label.name}: none")
    for kind in kinds:
        count = sum(f.startswith(kind + " ") for f in findings)
        parts.append(f"{kind}: {count or 'none'} reported")
    if len(findings) > 3:
        findings = [*findings[:3], f"... ({len(findings) - 3} more)"]
    grades = [m.value for m in output.measurements if m.concept.value == "MTAGRADE"]
    found = bool(findings) or any(g >= MTA_FINDING for g in grades)
    return "; ".join(parts + findings), found


def describe(manifest: ModelManifest, output: ModelOutput) -> tuple[str, bool]:
    """One line of what a model reported, and whether it is a confident finding.

    Parameters
    ----------
    manifest:
        The model's manifest: its threshold, its lesion (``instances``) labels and
        cluster name.
    output:
        What the runner returned.

    Returns
    -------
    tuple[str, bool]
        The text and the confident-finding flag (see the module docstring).
    """
    if manifest.task == "classification":
        return _classified(manifest, output)
    return _segmented(manifest, output)


class Reader:
    """The node's routing and models as ``route explain`` and the worker use them.

    Parameters
    ----------
    models:
        The models folder (``models/``).
    rules:
        The routing rules (``models/rules.yaml``).
    """

    def __init__(self, models: Path = HERE, rules: Path | None = None) -> None:
        self.registry = ModelRegistry(models, Device("cpu"))
        self.rules: RuleSet = load_rules(
            rules or models / "rules.yaml", list(self.registry.manifests), self.registry.unavailable
        )
        self.body_region: BodyRegionModels | None = self.registry.body_region_model()
        self._runs: dict[tuple[str, str], tuple[str, bool]] = {}

    def route(
        self, datasets: Sequence[Dataset], paths: Sequence[Path]
    ) -> tuple[SeriesRouting, str]:
        """Route one series as ``dicom-ai-node route explain`` does; also the body-region
        model's answer (asked always, used only where the headers leave the region open)."""
        info = series_info(
            header_of(datasets[0]),
            number_of_instances=len(datasets),
            sop_class_uids={str(ds.SOPClassUID) for ds in datasets},
        )
        modality = str(datasets[0].get("Modality", ""))
        answer = self.body_region.classify_files(paths) if self.body_region else None
        if answer is not None:
            region = f"{answer[0].value} ({answer[1]:.2f})"
        elif self.body_region is not None and self.body_region.accepts(modality):
            region = "no answer (multi-frame or colour)"
        else:
            region = f"no model reads {modality}"
        answers = {info.series_instance_uid: answer} if needs_image_answer(info) else {}
        routing = route_study([info], self.rules, self.registry.specs, RegionAnswers(answers))
        return routing.series[0], region

    def run(self, name: str, datasets: Sequence[Dataset], key: str) -> tuple[str, bool]:
        """What a model reports on a series, read as the worker reads it (cached by key)."""
        if (key, name) in self._runs:
            return self._runs[key, name]
        manifest = self.registry.manifests[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            volume, _, issues = load_volume(
                list(datasets),
                projection=manifest.projection,
                require_calibration=manifest.require_calibration,
                cine=manifest.cine,
            )
        blocking = [i.message for i in issues if i.blocking]
        if volume is None or blocking:
            result = ("not run: input check failed: " + "; ".join(blocking or ["no volume"]), False)
        else:
            runner = self.registry.runner(name)
            try:
                output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
            except (InferenceError, ValueError, RuntimeError) as exc:
                result = (f"not run: {type(exc).__name__}: {exc}", False)
            else:
                result = describe(manifest, output)
        self._runs[key, name] = result
        return result

    def report(
        self, image: RealImage, folder: Path, *, what_if: bool = True, findings_only: bool = False
    ) -> ImageReport:
        """Route one real image and run every model of its modality on it.

        ``what_if=False`` runs only the models it is routed to; ``findings_only`` only
        those that can report a confident finding (:func:`can_find`).
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom on the files broken on purpose
            return self._report(image, folder, what_if, findings_only)

    def _report(
        self, image: RealImage, folder: Path, what_if: bool, findings_only: bool
    ) -> ImageReport:
        datasets = image.load()
        paths = [Path(p) for ds in datasets if isinstance(p := getattr(ds, "filename", None), str)]
        if len(paths) != len(datasets):
            from dicom_ai_node.testing.series import write_series

            paths = write_series(datasets, folder / image.name.replace(" ", "_"))
        routing, region = self.route(datasets, paths)
        first = datasets[0]
        modality = str(first.get("Modality", "")).upper()
        answers = []
        for manifest in self.registry:
            if modality not in manifest.input.modalities:
                continue
            if not (what_if or manifest.name in routing.models):
                continue
            if findings_only and not can_find(manifest):
                continue
            report, finding = self.run(manifest.name, datasets, image.pixels or image.name)
            wrong = bool(image.regions and manifest.input.body_parts) and not (
                image.regions & manifest.input.body_parts
            )
            answers.append(
                Answer(manifest.name, manifest.name in routing.models, report, finding, wrong)
            )
        return ImageReport(image, modality, _headers(first), region, routing, tuple(answers))

    def reports(self, images: Sequence[RealImage], **options: bool) -> Iterator[ImageReport]:
        """:meth:`report` of each image, in order (``options`` as there)."""
        with tempfile.TemporaryDirectory(prefix="real-images-") as folder:
            for image in images:
                yield self.report(image, Path(folder), **options)


def _headers(ds: Dataset) -> str:
    named = [
        f"{keyword} {str(ds.get(keyword)).strip()!r}"
        for keyword in ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName")
        if str(ds.get(keyword) or "").strip()
    ]
    return ", ".join(named) or "none"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(reports: Sequence[ImageReport], model: str | None = None) -> str:
    """The two tables the cards quote: routing per image, then each model's answers
    (only ``model``'s when given)."""
    lines = []
    if model is None:
        lines += [
            "| image | what it shows | modality | headers | body-region model | body part for "
            "routing | routed to |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in reports:
            routed = ", ".join(r.routed) or "none"
            body_part = r.routing.decision.body_part.explanation
            cells: tuple[str, ...] = (f"`{r.image.name}`", r.image.shows, r.modality, r.headers)
            cells += (r.region_model, body_part, routed)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    lines += [
        "| image | model | routed | what it reports | confident finding |",
        "|---|---|---|---|---|",
    ]
    for r in reports:
        for a in r.answers:
            if model is not None and a.model != model:
                continue
            routed = "yes" if a.routed else "no (what if)"
            finding = "yes" if a.finding else "-" if a.report.startswith("not run") else "no"
            finding += " (wrong body part)" if a.finding and a.wrong_region else ""
            cells = (f"`{r.image.name}`", a.model, routed, a.report, finding)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def text(report: ImageReport) -> str:
    """Plain text for one image."""
    r = report
    lines = [
        f"{r.image.name}: {r.image.shows}",
        f"  {r.modality}; headers: {r.headers}",
        f"  body-region model: {r.region_model}",
        f"  body part for routing: {r.routing.decision.body_part.explanation}",
        f"  -> {r.routing.reason}",
    ]
    for a in r.answers:
        tag = "routed" if a.routed else "what if"
        flag = " CONFIDENT FINDING" if a.finding else ""
        flag += " (wrong body part)" if a.finding and a.wrong_region else ""
        lines.append(f"  {a.model} [{tag}]: {a.report}{flag}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=HERE, help="the models folder")
    parser.add_argument("--rules", type=Path, help="routing rules (default: MODELS/rules.yaml)")
    parser.add_argument("--markdown", action="store_true", help="print the tables of the cards")
    parser.add_argument("--model", help="with --markdown: only this model's answers")
    parser.add_argument("--no-volumes", action="store_true", help="pydicom(-data) images only")
    args = parser.parse_args(argv)
    reader = Reader(args.models, args.rules)
    reports = reader.reports(real_images(volumes=not args.no_volumes))
    if args.markdown:
        print(markdown(list(reports), args.model), end="")
    else:
        for report in reports:
            print(text(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
