"""Route: a routing rule drawn from a model's declared input, as YAML text.

``dicom-ai-node models add PATH --add-rule`` appends it to the rules file, so a model
added by an administrator routes at once; the text says where it came from, and is
meant to be read and narrowed (a site rule for one sender, a description pattern).
Pure: the caller writes the file and validates the result with :func:`.load.load_rules`.
"""

from __future__ import annotations

import json

from ..domain import InputSpec

__all__ = ["rule_for"]


def _flow(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def rule_for(model: str, spec: InputSpec, rule_name: str | None = None) -> str:
    """YAML text of one rule (an item of ``rules:``) routing series that meet ``spec``.

    Modality, normalised body part and SOP class become ``when`` conditions, and so do
    ``require_original`` (ImageType contains ORIGINAL) and ``require_axial``; slice
    counts and thickness stay with the model's own input check (the router applies it
    to every rule). Localizers are excluded.
    """
    lines = [
        f"  - name: {json.dumps(rule_name or model)}",
        f"    model: {json.dumps(model)}",
        "    description: Added by 'dicom-ai-node models add' from the model's declared input.",
        "    when:",
    ]
    when = []
    if spec.modalities:
        when.append(f"      modality: {_flow(sorted(spec.modalities))}")
    if spec.body_parts:
        when.append(f"      body_part: {_flow(sorted(b.value for b in spec.body_parts))}")
    if spec.sop_class_uids:
        when.append(f"      sop_class_uid: {_flow(sorted(spec.sop_class_uids))}")
    if spec.require_original:
        when.append("      ImageType: {contains: ORIGINAL}")
    if spec.require_axial:
        when.append("      axial: true")
    if not when:  # a model that declares nothing would take every series: say so
        when.append("      number_of_slices: {min: 1}")
    lines += when
    lines += [
        "    unless:",
        "      ImageType: {contains: LOCALIZER}",
    ]
    return "\n".join(lines) + "\n"
