"""Assemble: the sweep that completes series and studies and turns them into jobs.

Each sweep, with the current time:

1. series quiet for ``quiet_period_s`` (or at their expected count) become COMPLETE;
2. each COMPLETE series is routed for the rules that take each matching series
   (``select: each``: a radiograph view, an ultrasound still), which get their job now;
   the series then WAITS for its study. The node's own results, forwarded back by a
   PACS, are recognised here and never routed;
3. each study with a waiting series, none of whose series is still receiving, and
   which is quiet (no instance for the study quiet period) or has reached the counts
   its sender announced, is routed for the rules that choose among its series: one
   job per (study, model), revised when late or better data arrives
   (:mod:`.revision`).

Everything is read from and written to the database (the store's functions), so a
restart resumes where the sweep was; a decision about series that changed meanwhile is
not written and is made again on the next sweep.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..domain import (
    InputSpec,
    JobInput,
    PlannedJob,
    PriorJob,
    Scope,
    SeriesInfo,
    SeriesSelection,
    SeriesState,
    Step,
)
from ..identity import made_by_node
from ..metrics import NodeMetrics
from ..route.bodypart import BodyRegionClassifier, RegionAnswers, needs_image_answer
from ..route.header import series_info
from ..route.router import Assignment, StudyRouting, route_series, route_study
from ..route.rules import RuleSet
from ..store.db import Database, Sessions
from ..store.index import ReceivingSeries, complete_series
from ..store.routing import (
    SeriesDecision,
    StoredSeries,
    StoredStudy,
    prior_jobs,
    record_routing,
    series_in_state,
    stored_series,
    stored_study,
    studies_waiting,
)
from .policy import completion_reason, study_completion_reason
from .revision import LatePolicy, input_key, plan_job

__all__ = ["Assembler", "complete_due_series", "info_of"]

log = logging.getLogger(__name__)


def info_of(series: StoredSeries) -> SeriesInfo:
    """The routing summary of a stored series (its header as received, its counts).

    The UIDs are those the index filed it under, whatever its first header said.
    """
    info = series_info(
        series.header,
        number_of_instances=series.instance_count,
        sop_class_uids=series.sop_class_uids,
        calling_ae_title=series.calling_ae_title,
    )
    return dataclasses.replace(
        info,
        study_instance_uid=series.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
    )


def complete_due_series(sessions: Sessions, now: dt.datetime, quiet_period_s: float) -> list[str]:
    """Complete the receiving series whose time has come (:func:`.policy.completion_reason`).

    Parameters
    ----------
    sessions:
        The store's session factory.
    now:
        The current time.
    quiet_period_s:
        Seconds without a new instance after which a series is complete.

    Returns
    -------
    list[str]
        The Series Instance UIDs completed.
    """

    def reason_of(series: ReceivingSeries) -> str | None:
        return completion_reason(
            now=now,
            last_received_at=series.last_received_at,
            quiet_period_s=quiet_period_s,
            instance_count=series.instance_count,
            expected_count=series.expected_count,
        )

    return complete_series(sessions, now, now - dt.timedelta(seconds=quiet_period_s), reason_of)


def _study_count(members: Iterable[StoredSeries], keyword: str) -> int | None:
    """A count the sender announced in the study's headers (the largest), if any."""
    values = []
    for s in members:
        try:
            values.append(int(s.header.get(keyword)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return max(values) if values else None


#: Series states of a study still being assembled.
_ASSEMBLING = frozenset({SeriesState.RECEIVING, SeriesState.COMPLETE})


def _members(study: StoredStudy) -> list[StoredSeries]:
    """The study's series the routing decides about: all but the node's own results."""
    return [s for s in study.series if made_by_node(s.header) is None]


def _uids_of(key: str) -> set[str]:
    """The series UIDs of a job's ``input_key`` (``uid@gN,...``)."""
    return {part.rsplit("@", 1)[0] for part in key.split(",") if part}


@dataclass
class Assembler:
    """Completes series and studies and makes their jobs (see the module docstring).

    Parameters
    ----------
    db:
        The database.
    rules:
        The routing rules.
    specs:
        Each model's declared input.
    versions:
        Each model's version (part of its jobs' keys).
    quiet_period_s:
        Seconds without an instance before a series is complete.
    study_quiet_period_s:
        Seconds without an instance of a study before its study-level rules decide; never
        shorter than ``quiet_period_s`` (0 means the same).
    late_policy:
        ``assemble.late_instance_policy``.
    classifier:
        The image-based body-region model, run here on the series whose headers leave
        the region open (:func:`~dicom_ai_node.route.bodypart.needs_image_answer`);
        routing gets its answers and reads no pixels.
    metrics:
        Where completed series and studies are counted by trigger, and each job's wait
        from the last instance of its input observed per model (a registry of its own
        when not given).
    """

    db: Database
    rules: RuleSet
    specs: Mapping[str, InputSpec]
    versions: Mapping[str, str]
    quiet_period_s: float
    study_quiet_period_s: float = 0.0
    late_policy: LatePolicy | str = LatePolicy.RERUN
    classifier: BodyRegionClassifier | None = None
    metrics: NodeMetrics = field(default_factory=lambda: NodeMetrics(process=False))
    _policy: LatePolicy = field(init=False, repr=False)
    #: What failed on an earlier sweep (logged once, until it succeeds).
    _failing: set[tuple[str, int]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self._policy = LatePolicy(self.late_policy)

    def sweep(self, now: dt.datetime) -> list[str]:
        """One sweep at ``now``; returns the UIDs of the series it completed.

        A series or study whose routing fails is logged (once, until it succeeds) and
        left for the next sweep; it never stops the others.
        """
        done = complete_due_series(self.db.session, now, self.quiet_period_s)
        for series_pk in series_in_state(self.db.session, SeriesState.COMPLETE):
            self._isolated(("series", series_pk), self.route_series, series_pk, now)
        for study_pk in studies_waiting(self.db.session):
            self._isolated(("study", study_pk), self.route_study, study_pk, now)
        return done

    def _isolated(
        self,
        key: tuple[str, int],
        step: Callable[[int, dt.datetime], None],
        pk: int,
        now: dt.datetime,
    ) -> None:
        try:
            step(pk, now)
        except Exception:
            if key not in self._failing:
                log.exception("routing %s %d failed; tried again each sweep", *key)
            self._failing.add(key)
        else:
            self._failing.discard(key)

    # -- series ---------------------------------------------------------------------------
    def route_series(self, series_pk: int, now: dt.datetime) -> None:
        """A complete series: never routed if the node made it, else its ``each`` jobs."""
        seen = stored_series(self.db.session, series_pk)
        if seen is None or seen.state is not SeriesState.COMPLETE:
            return
        info = info_of(seen)
        decision = route_series(info, self.rules, self.specs, self.region_answers([info]))
        if decision.made_by:
            mine = SeriesDecision(seen, SeriesState.NOT_ROUTED, decision.reason)
            if record_routing(self.db.session, now, [], [mine], self.versions):
                self.metrics.series_completion(seen.reason)
            return
        each = [m for m in decision.models if self._per_series(m)]
        jobs = prior_jobs(self.db.session, seen.study_pk)
        plans = [self._plan(self._each_input(m, seen, decision.explanation), jobs) for m in each]
        reason = "complete; waiting for the study to be quiet"
        if each:
            reason = f"routed to {', '.join(each)} (each matching series); " + reason
        waiting = SeriesDecision(seen, SeriesState.WAITING, reason)
        if record_routing(self.db.session, now, plans, [waiting], self.versions):
            self.metrics.series_completion(seen.reason)
            self._waited(plans, {seen.series_instance_uid: seen}, now)

    def _waited(
        self, plans: Iterable[PlannedJob], by_uid: Mapping[str, StoredSeries], now: dt.datetime
    ) -> None:
        """Observe, for each job made or given new input, the wait since its last instance."""
        for plan in plans:
            if plan.step not in (Step.NEW, Step.REVISE, Step.REPLACE):
                continue
            times = [
                by_uid[uid].last_received_at
                for uid in plan.input.series_instance_uids
                if uid in by_uid
            ]
            if times:
                waited = (now - max(times)).total_seconds()
                self.metrics.stage("wait_complete", plan.input.model, waited)

    def region_answers(self, infos: Iterable[SeriesInfo]) -> RegionAnswers | None:
        """The classifier's answers for the series routing would ask it about."""
        if self.classifier is None:
            return None
        asked = [i for i in infos if made_by_node(i.header) is None and needs_image_answer(i)]
        return RegionAnswers({i.series_instance_uid: self.classifier(i) for i in asked})

    def _per_series(self, model: str) -> bool:
        spec = self.specs.get(model, InputSpec())
        return spec.scope is Scope.SERIES and self.rules.selection(model) is SeriesSelection.EACH

    def _each_input(self, model: str, seen: StoredSeries, routing: tuple[str, ...]) -> JobInput:
        uid = seen.series_instance_uid
        return JobInput(
            model=model,
            subject=f"series/{uid}",
            series_instance_uids=(uid,),
            input_key=input_key([(uid, seen.generation)]),
            explanation={
                "routing": list(routing),
                "series": [uid],
                "selection": ["select: each: every matching series gets its own job"],
            },
        )

    def _plan(self, wanted: JobInput, jobs: Mapping[tuple[str, str], PriorJob]) -> PlannedJob:
        prior = jobs.get((wanted.subject, wanted.model))
        if prior is None and wanted.subject.startswith("study/"):
            # a series job of this model in the study was made before jobs had subjects
            # (or while its rules took each series): the study's job revises it
            earlier = [
                job
                for (subject, model), job in jobs.items()
                if model == wanted.model and subject.startswith("series/")
            ]
            prior = max(earlier, key=lambda job: job.pk, default=None)
        return plan_job(wanted, prior, self._policy)

    # -- study ----------------------------------------------------------------------------
    def route_study(self, study_pk: int, now: dt.datetime) -> None:
        """Decide a study's study-level jobs once it is complete (see the module docstring)."""
        light = stored_study(self.db.session, study_pk, sop_classes=False)
        if light is None or self._completion(light, now) is None:
            return  # checked each sweep while the study waits: no instance rows read
        study = stored_study(self.db.session, study_pk)
        why = self._completion(study, now) if study is not None else None
        if study is None or why is None:
            return
        members = _members(study)
        by_uid = {s.series_instance_uid: s for s in members}
        infos = [info_of(s) for s in members]
        routing = route_study(infos, self.rules, self.specs, self.region_answers(infos))
        plans = [
            self._plan(self._study_input(a, routing, by_uid, study), study.jobs)
            for a in routing.assignments
        ]
        decisions = self._series_decisions(routing, plans, by_uid, why)
        if not record_routing(self.db.session, now, plans, decisions, self.versions):
            log.debug(
                "study changed while it was routed; deciding again",
                extra={"study": study.study_instance_uid},
            )
            return
        self.metrics.study_completion(why)
        self._waited(plans, by_uid, now)

    def _completion(self, study: StoredStudy, now: dt.datetime) -> str | None:
        """Why the study is complete, or None: a series waits, none still arrives, and the
        study is quiet or at its announced counts (the node's own series do not count)."""
        members = _members(study)
        states = {s.state for s in members}
        if SeriesState.WAITING not in states or states & _ASSEMBLING:
            return None
        return study_completion_reason(
            now=now,
            last_received_at=max(s.last_received_at for s in members),
            quiet_period_s=max(self.study_quiet_period_s, self.quiet_period_s),
            series_count=len(members),
            instance_count=sum(s.instance_count for s in members),
            expected_series=_study_count(members, "NumberOfStudyRelatedSeries"),
            expected_instances=_study_count(members, "NumberOfStudyRelatedInstances"),
        )

    def _study_input(
        self,
        assignment: Assignment,
        routing: StudyRouting,
        by_uid: Mapping[str, StoredSeries],
        study: StoredStudy,
    ) -> JobInput:
        uids = assignment.series_instance_uids
        per_series = assignment.selection is SeriesSelection.EACH
        subject = f"series/{uids[0]}" if per_series else f"study/{study.study_instance_uid}"
        first = routing.for_series(uids[0])
        return JobInput(
            model=assignment.model,
            subject=subject,
            series_instance_uids=uids,
            input_key=input_key([(u, by_uid[u].generation) for u in uids]),
            explanation={
                "routing": [*first.decision.explanation, *first.notes],
                "series": list(uids),
                "selection": list(assignment.explanation),
            },
        )

    @staticmethod
    def _series_decisions(
        routing: StudyRouting,
        plans: list[PlannedJob],
        by_uid: Mapping[str, StoredSeries],
        why: str,
    ) -> list[SeriesDecision]:
        """Each series' state after the study decision, and the reason to show."""
        running: dict[str, list[str]] = {uid: [] for uid in by_uid}
        recorded: dict[str, list[str]] = {uid: [] for uid in by_uid}
        for plan in plans:
            if plan.step is Step.RECORD:
                assert plan.prior is not None
                for uid in _uids_of(plan.prior.input_key) & running.keys():
                    running[uid].append(plan.input.model)
                for uid in plan.input.series_instance_uids:
                    recorded[uid].append(f"{plan.input.model} ({plan.reason})")
            else:
                for uid in plan.input.series_instance_uids:
                    running[uid].append(plan.input.model)
        out = []
        for item in routing.series:
            uid = item.info.series_instance_uid
            body = f"body part {item.decision.body_part.explanation}"
            if running[uid]:
                reason = f"routed to {', '.join(running[uid])}; {why}; {body}"
                out.append(SeriesDecision(by_uid[uid], SeriesState.ROUTED, reason))
                continue
            reason = (
                item.reason
                if not recorded[uid]
                else ("would now be chosen for " + "; ".join(recorded[uid]))
            )
            out.append(SeriesDecision(by_uid[uid], SeriesState.NOT_ROUTED, f"{reason}; {body}"))
        return out
