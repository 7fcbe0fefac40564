"""Route: render a study's routing as the text ``dicom-ai-node route explain PATH`` prints.

Pure formatting: the CLI reads the folder, builds each SeriesInfo with
:func:`~.header.header_of` and :func:`~.header.series_info`, routes with
:func:`~.router.route_study` and prints :func:`format_study_routing`.
"""

from __future__ import annotations

from ..domain import Scope, SeriesSelection
from .router import Assignment, SeriesRouting, StudyRouting

__all__ = ["format_series_routing", "format_study_routing"]

_INDENT = "  "


def format_series_routing(item: SeriesRouting) -> list[str]:
    """Lines for one series: identity, body part, destination, selection notes and rules."""
    info = item.info
    number = info.header.get("SeriesNumber")
    title = [f"Series {info.series_instance_uid}"]
    if number not in (None, ""):
        title.append(f"#{number}")
    title.append(info.modality or "(no modality)")
    if info.series_description:
        title.append(repr(info.series_description))
    slices = info.number_of_slices
    title.append(f"{slices} slice" + ("" if slices == 1 else "s"))
    decision = item.decision
    bp = decision.body_part
    lines = [
        "  ".join(title),
        f"{_INDENT}body part: {bp.explanation}",
    ]
    if item.routed:
        lines.append(f"{_INDENT}-> {', '.join(item.models)}")
    else:
        lines.append(f"{_INDENT}-> not routed: {item.reason}")
    lines.extend(f"{_INDENT}{note}" for note in item.notes if note != item.reason)
    if decision.explanation:
        lines.append(f"{_INDENT}rules:")
        lines.extend(f"{_INDENT * 2}{line}" for line in decision.explanation)
    else:
        lines.append(f"{_INDENT}rules: none configured")
    return lines


def _when(job: Assignment) -> str:
    """When the node makes this job: as the series completes, or once the study is quiet."""
    if job.selection is SeriesSelection.EACH:
        return "each matching series: one job per series, when it is complete"
    if job.scope is Scope.STUDY:
        return "study scope: every accepted series, one job when the study is quiet"
    return "best series of the study: one job per study, when the study is quiet"


def format_study_routing(routing: StudyRouting) -> str:
    """Render every study: its series, where each goes and why, then the resulting jobs.

    Parameters
    ----------
    routing:
        The output of :func:`~.router.route_study`.

    Returns
    -------
    str
        Plain text, one line per fact, ending with a newline.
    """
    if not routing.series:
        return "No series.\n"
    lines: list[str] = []
    for study_uid in routing.study_instance_uids:
        members = [s for s in routing.series if s.info.study_instance_uid == study_uid]
        description = members[0].info.study_description
        head = f"Study {study_uid or '(no Study Instance UID)'}"
        head += f"  {description!r}" if description else ""
        count = len(members)
        lines.append(f"{head}  ({count} series)")
        for item in members:
            lines.extend(_INDENT + line for line in format_series_routing(item))
        jobs = [a for a in routing.assignments if a.study_instance_uid == study_uid]
        lines.append(f"{_INDENT}Jobs:" if jobs else f"{_INDENT}Jobs: none")
        for job in jobs:
            series = ", ".join(job.series_instance_uids)
            lines.append(f"{_INDENT * 2}{job.model} ({_when(job)}): {series}")
            lines.extend(f"{_INDENT * 3}{line}" for line in job.explanation)
        lines.append("")
    return "\n".join(lines)
