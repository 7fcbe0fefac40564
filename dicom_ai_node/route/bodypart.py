"""Route: decide which body region a series shows, and say from which attribute.

Sources, most trusted first: Body Part Examined (0018,0015) with the defined terms of
PS3.16 Annex L; the Anatomic Region Sequence (0008,2218) with SNOMED CT codes of CID 4031
"Common Anatomic Regions"; then keywords in SeriesDescription, ProtocolName and
StudyDescription (English, German, French, Chinese); last, an optional image classifier.
When sources disagree the decision says so, and a classifier, if given, settles it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..domain import BodyPart, SeriesInfo

__all__ = [
    "SOURCES",
    "BodyPartDecision",
    "BodyRegionClassifier",
    "RegionAnswers",
    "body_part_from_code",
    "body_part_from_term",
    "needs_image_answer",
    "normalise_body_part",
    "regions_in_text",
]

B = BodyPart

#: Every value :attr:`BodyPartDecision.source` can take.
SOURCES = (
    "BodyPartExamined",
    "AnatomicRegionSequence",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "image classifier",
    "none",
)


class BodyRegionClassifier(Protocol):
    """Hook for an image-based body-region model (see docs/routing.md).

    Called with the series summary when the headers name no region or name regions that
    contradict each other. Returns the region and a confidence in [0, 1], or ``None`` when
    it cannot tell.
    """

    def __call__(self, info: SeriesInfo) -> tuple[BodyPart, float] | None: ...


@dataclass(frozen=True)
class RegionAnswers:
    """The image classifier's answers, given to routing by whoever ran it.

    Routing reads no pixels: the caller runs the classifier on the series for which
    :func:`needs_image_answer` is true and passes the answers as this
    :class:`BodyRegionClassifier`. A series without an answer counts as undecided.
    """

    answers: Mapping[str, tuple[BodyPart, float] | None]

    def __call__(self, info: SeriesInfo) -> tuple[BodyPart, float] | None:
        return self.answers.get(info.series_instance_uid)


@dataclass(frozen=True)
class BodyPartDecision:
    """The normalised body region of a series and how it was found.

    Attributes
    ----------
    body_part:
        The main region (the first one named, for combined regions such as CHESTABDOMEN).
    source:
        One of :data:`SOURCES`.
    explanation:
        One line for people, starting with the region and naming the source: the value
        that decided and any conflict.
    regions:
        Every region the deciding source covers, e.g. {CHEST, ABDOMEN} for
        CHESTABDOMEN; rules and input specs accept a series when any of them fits.
    conflicts:
        The sources that named a region outside ``regions``.
    """

    body_part: BodyPart
    source: str
    explanation: str
    regions: frozenset[BodyPart] = field(default=frozenset())
    conflicts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown body part source {self.source!r}; allowed: {SOURCES}")
        if not self.regions:
            object.__setattr__(self, "regions", frozenset({self.body_part}))


# PS3.16 Annex L defined terms for Body Part Examined, and common variants, after
# upper-casing and removing everything but letters and digits. Combined regions list
# every region they cover, most cranial first.
_TERMS: dict[str, tuple[BodyPart, ...]] = {}


def _terms(parts: tuple[BodyPart, ...], *names: str) -> None:
    for name in names:
        _TERMS[name] = parts


_terms((B.HEAD,), "HEAD", "BRAIN", "SKULL", "CEREBELLUM", "CIRCLEOFWILLIS", "FACE", "ORBIT")
_terms((B.HEAD,), "EYE", "EAR", "IAC", "NOSE", "SINUS", "JAW", "TMJ", "MAXILLA", "ZYGOMA")
_terms((B.HEAD,), "MANDIBLE", "MOUTH", "TONGUE", "SCALP", "CRANIUM", "CRANIAL", "HEADCT")
_terms((B.HEAD, B.NECK), "HEADNECK", "HEADANDNECK")
_terms((B.NECK,), "NECK", "LARYNX", "PHARYNX", "THYROID", "PAROTID", "SUBMANDIBULAR")
_terms((B.NECK,), "TRACHEA", "CAROTID")
_terms((B.NECK, B.CHEST), "NECKCHEST")
_terms((B.NECK, B.CHEST, B.ABDOMEN), "NECKCHESTABDOMEN")
_terms((B.NECK, B.CHEST, B.ABDOMEN, B.PELVIS), "NECKCHESTABDPELVIS")
_terms((B.CHEST,), "CHEST", "THORAX", "LUNG", "LUNGS", "MEDIASTINUM", "BRONCHUS", "RIB")
_terms((B.CHEST,), "STERNUM", "THYMUS", "ESOPHAGUS", "PULMONARY", "THORACIC")
_terms((B.CHEST, B.ABDOMEN), "CHESTABDOMEN", "THORAXABDOMEN")
_terms((B.CHEST, B.ABDOMEN, B.PELVIS), "CHESTABDPELVIS", "CHESTABDOMENPELVIS", "TRUNK")
_terms((B.BREAST,), "BREAST", "AXILLA", "MAMMA")
_terms((B.HEART,), "HEART", "CARDIAC", "CORONARYARTERY", "CORONARY")
_terms((B.ABDOMEN,), "ABDOMEN", "ABDOMINAL", "LIVER", "KIDNEY", "PANCREAS", "SPLEEN")
_terms((B.ABDOMEN,), "STOMACH", "GALLBLADDER", "DUODENUM", "JEJUNUM", "ILEUM", "ADRENAL")
_terms((B.ABDOMEN,), "COLON", "BILIARYTRACT", "URETER", "ABDOMINALAORTA")
_terms((B.ABDOMEN, B.PELVIS), "ABDOMENPELVIS", "ABDPELVIS")
_terms((B.PELVIS,), "PELVIS", "PROSTATE", "BLADDER", "UTERUS", "CERVIX", "OVARY", "RECTUM")
_terms((B.PELVIS,), "VAGINA", "VULVA", "TESTIS", "SCROTUM", "PENIS", "URETHRA", "BUTTOCK")
_terms((B.PELVIS,), "ILIUM")
_terms((B.SPINE,), "SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "CTSPINE", "TLSPINE")
_terms((B.SPINE,), "LSSPINE", "WHOLESPINE", "COCCYX", "SACRUM", "SPINALCORD", "BACK")
_terms((B.UPPER_EXTREMITY,), "ARM", "UPPEREXTREMITY", "UPRLIMB", "UPPERLIMB", "SHOULDER")
_terms((B.UPPER_EXTREMITY,), "ELBOW", "FOREARM", "WRIST", "HAND", "FINGER", "THUMB")
_terms((B.UPPER_EXTREMITY,), "HUMERUS", "CLAVICLE", "SCAPULA", "ACJOINT", "SCJOINT")
_terms((B.LOWER_EXTREMITY,), "LEG", "LOWEREXTREMITY", "LOWRLIMB", "LOWERLIMB", "HIP")
_terms((B.LOWER_EXTREMITY,), "THIGH", "KNEE", "PATELLA", "CALF", "ANKLE", "FOOT", "TOE")
_terms((B.LOWER_EXTREMITY,), "FEMUR", "TIBIA", "FIBULA", "CALCANEUS", "HEEL")
_terms((B.WHOLEBODY,), "WHOLEBODY", "WB", "TOTALBODY", "ENTIREBODY")

# CID 4031 "Common Anatomic Regions" (SNOMED CT, scheme SCT; older objects use SRT codes).
_CODES: dict[str, tuple[BodyPart, ...]] = {}


def _codes(parts: tuple[BodyPart, ...], *values: str) -> None:
    for value in values:
        _CODES[value] = parts


_codes((B.CHEST,), "816094009", "43799004", "51185008", "39607008", "72410000", "78904004")
_codes((B.CHEST,), "T-D3000", "T-28000")
_codes((B.HEAD,), "69536005", "12738006", "89546000", "89545001", "363654007", "2095001")
_codes((B.HEAD,), "T-D1100", "T-A0100")
_codes((B.HEAD, B.NECK), "774007")
_codes((B.NECK,), "45048000", "69748006", "4596009", "T-D1600")
_codes((B.NECK, B.CHEST), "417437006")
_codes((B.BREAST,), "76752008", "80248007", "73056007", "T-04000")
_codes((B.HEART,), "80891009", "41801008", "T-32000")
_codes((B.ABDOMEN,), "818981001", "113345001", "80581009", "10200004", "64033007")
_codes((B.ABDOMEN,), "15776009", "78961009", "T-D4000")
_codes((B.CHEST, B.ABDOMEN), "416550000")
_codes((B.CHEST, B.ABDOMEN, B.PELVIS), "416775004")
_codes((B.ABDOMEN, B.PELVIS), "818982008", "416949008", "818987002")
_codes((B.PELVIS,), "816092008", "12921003", "118645006", "41216001", "89837001", "35039007")
_codes((B.PELVIS,), "T-D6000")
_codes((B.SPINE,), "421060004", "122494005", "122495006", "122496007", "54735007", "64688005")
_codes((B.SPINE,), "1217257000", "1217256009", "1217253001", "51282000", "297171002")
_codes((B.SPINE,), "297172009")
_codes((B.UPPER_EXTREMITY,), "53120007", "16982005", "16953009", "74670003", "8205005")
_codes((B.UPPER_EXTREMITY,), "85562004", "14975008", "40983000", "7569003", "85050009")
_codes((B.UPPER_EXTREMITY,), "51299004", "79601000")
_codes((B.LOWER_EXTREMITY,), "61685007", "72696002", "49076000", "29836001", "24136001")
_codes((B.LOWER_EXTREMITY,), "70258002", "56459004", "30021000", "68367000", "71341001")
_codes((B.LOWER_EXTREMITY,), "12611008", "87342007", "29707007")
_codes((B.WHOLEBODY,), "38266002")

# Keywords for descriptions, written case- and accent-folded (see _fold). Latin-script
# keywords must start at a word boundary and end at one unless they end in "*"; a space
# stands for any run of separators (or none). CJK keywords match as substrings.
_KEYWORDS: dict[BodyPart, tuple[str, ...]] = {
    B.CHEST: (
        "chest", "thorax*", "thorac*", "lung*", "pulmo*", "poumon*", "poitrine", "hrct",
        "ctpa", "mediastin*", "胸部", "胸腔", "胸片", "肺", "纵隔", "縱隔", "胸廓",
    ),
    B.HEAD: (
        "head", "brain", "skull", "cranial", "cranium", "cerebr*", "encephal*", "kopf",
        "schadel*", "schaedel*", "hirn*", "gehirn*", "cct", "crane", "cerveau", "tete",
        "sinus*", "nnh", "orbit*", "头颅", "头部", "颅脑", "颅", "脑", "頭部", "頭顱",
        "顱", "腦", "鼻窦", "眼眶",
    ),
    B.NECK: (
        "neck", "hals*", "cou", "larynx", "thyroid*", "schilddruse", "thyroide", "颈部",
        "頸部", "甲状腺", "喉",
    ),
    B.BREAST: ("breast", "breasts", "mamma*", "mammo*", "mammaire", "seins", "乳腺", "乳房"),
    B.HEART: (
        "heart", "cardiac", "cardio*", "coronar*", "herz*", "coeur", "cœur", "koronar*",
        "心脏", "心臟", "冠状动脉", "冠脉", "冠狀動脈",
    ),
    B.ABDOMEN: (
        "abdom*", "bauch*", "oberbauch*", "leber", "liver", "foie", "kidney*", "renal",
        "niere*", "pancrea*", "pankreas", "腹部", "上腹", "腹腔", "肝", "肾", "腎", "胰",
    ),
    B.PELVIS: (
        "pelvis", "pelvi*", "becken*", "bassin", "prostat*", "bladder", "harnblase",
        "uterus", "rectum", "盆腔", "骨盆", "前列腺", "膀胱",
    ),
    B.SPINE: (
        "spine", "spinal", "c spine", "t spine", "l spine", "cervical spine",
        "thoracic spine", "lumbar*", "lumbal*", "rachis", "colonne", "wirbelsaule",
        "wirbel*", "halswirbel*", "brustwirbel*", "lendenwirbel*",
        "hws", "bws", "lws", "vertebr*", "sacrum", "脊柱", "颈椎", "頸椎", "胸椎", "腰椎",
        "骶",
    ),
    B.UPPER_EXTREMITY: (
        "shoulder*", "schulter*", "epaule", "arm", "arms", "elbow", "ellbogen", "coude",
        "wrist", "handgelenk", "poignet", "hand", "hands", "finger*", "doigt*", "humer*",
        "forearm", "unterarm", "oberarm", "clavic*", "肩", "肘", "腕", "手指", "上肢",
    ),
    B.LOWER_EXTREMITY: (
        "knee*", "knie*", "genou*", "hip", "hips", "hufte*", "hanche", "leg", "legs",
        "bein", "beine", "jambe*", "ankle", "sprunggelenk", "cheville", "foot", "feet",
        "fuss", "pied", "femur", "tibia", "fibula", "oberschenkel", "unterschenkel",
        "cuisse", "膝", "髋", "髖", "踝", "足部", "下肢", "股骨",
    ),
    B.WHOLEBODY: (
        "whole body", "total body", "ganzkorper*", "corps entier", "全身",
    ),
}  # fmt: skip

# Keywords that name several regions at once (CJK compounds; Latin text names each part).
_COMBINED: dict[str, tuple[BodyPart, ...]] = {
    "胸腹盆": (B.CHEST, B.ABDOMEN, B.PELVIS),
    "胸腹": (B.CHEST, B.ABDOMEN),
    "腹盆": (B.ABDOMEN, B.PELVIS),
    "头颈": (B.HEAD, B.NECK),
    "頭頸": (B.HEAD, B.NECK),
}

_CJK = re.compile(r"[\u3000-\u9fff\uf900-\ufaff]")


def _fold(text: str) -> str:
    """Case- and accent-fold: 'Schädel' -> 'schadel', 'CRÂNE' -> 'crane', full width -> ASCII."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _pattern(keyword: str) -> str:
    if _CJK.search(keyword):
        return re.escape(keyword)
    prefix = keyword.endswith("*")
    words = keyword.rstrip("*").split()
    body = r"[^a-z0-9]*".join(re.escape(w) for w in words)
    return r"(?<![a-z0-9])" + body + (r"[a-z0-9]*" if prefix else r"(?![a-z0-9])")


_KEYWORD_RES: tuple[tuple[re.Pattern[str], tuple[BodyPart, ...], str], ...] = (
    *((re.compile(_pattern(kw)), (part,), kw) for part, kws in _KEYWORDS.items() for kw in kws),
    *((re.compile(_pattern(kw)), parts, kw) for kw, parts in _COMBINED.items()),
)


def regions_in_text(text: str) -> list[tuple[BodyPart, str]]:
    """Find the body regions named in free text, in the order they appear.

    Longer matches, then more specific keywords, win over those they overlap
    ("thoracic spine" is SPINE, not CHEST; "Halswirbelsäule" is SPINE, not NECK).
    Matching is case- and accent-insensitive, word-boundary aware for Latin script and
    by substring for Chinese.

    Parameters
    ----------
    text:
        A description, e.g. SeriesDescription (0008,103E).

    Returns
    -------
    list[tuple[BodyPart, str]]
        Each region once, with the (folded) words that named it first.
    """
    folded = _fold(text)
    hits = []
    for regex, parts, keyword in _KEYWORD_RES:
        for m in regex.finditer(folded):
            # earliest first; then the longest match; then the most specific keyword
            rank = (m.start(), m.start() - m.end(), -len(keyword))
            hits.append((rank, m.end(), parts, m.group(0)))
    hits.sort(key=lambda h: h[0])
    found: dict[BodyPart, str] = {}
    taken_until = -1
    for (start, _, _), end, parts, word in hits:
        if start < taken_until:
            continue
        taken_until = end
        for part in parts:
            found.setdefault(part, word)
    return list(found.items())


def body_part_from_term(value: str) -> tuple[BodyPart, ...]:
    """Map a Body Part Examined value to regions (PS3.16 Annex L); ``()`` if unknown."""
    key = re.sub(r"[^A-Z0-9]", "", _fold(value).upper())
    return _TERMS.get(key, ())


def body_part_from_code(value: str, scheme: str = "SCT") -> tuple[BodyPart, ...]:
    """Map an anatomic region code (CID 4031, SCT or legacy SRT) to regions; ``()`` if unknown."""
    if scheme.upper() not in ("SCT", "SRT", "SNM3", "99SDM", ""):
        return ()
    return _CODES.get(value.strip(), ())


@dataclass(frozen=True)
class _Finding:
    source: str
    regions: tuple[BodyPart, ...]  # in order of mention; empty when nothing recognised
    detail: str


def _findings(info: SeriesInfo) -> list[_Finding]:
    out: list[_Finding] = []
    value = info.body_part_examined.strip()
    if value:
        parts = body_part_from_term(value)
        if parts:
            out.append(_Finding("BodyPartExamined", parts, f"{value!r} (PS3.16 Annex L)"))
        else:
            found = regions_in_text(value)
            detail = f"{value!r}" + (
                f" (keyword {found[0][1]!r})" if found else " (not a known term)"
            )
            out.append(_Finding("BodyPartExamined", tuple(p for p, _ in found), detail))
    for code in info.anatomic_region_codes:
        parts = body_part_from_code(code.value, code.scheme_designator)
        detail = f"({code.value}, {code.scheme_designator}, {code.meaning!r})"
        out.append(_Finding("AnatomicRegionSequence", parts, detail + " (CID 4031)"))
    texts = (
        ("SeriesDescription", info.series_description),
        ("ProtocolName", info.protocol_name),
        ("StudyDescription", info.study_description),
    )
    for source, text in texts:
        found = regions_in_text(text) if text.strip() else []
        if found:
            words = ", ".join(repr(k) for _, k in found)
            out.append(_Finding(source, tuple(p for p, _ in found), f"{text!r} ({words})"))
    return out


def _names(parts: Iterable[BodyPart]) -> str:
    return "+".join(p.value for p in parts)


def _conflicts(named: list[_Finding]) -> list[_Finding]:
    """The findings that name none of the regions of the first (most trusted) one."""
    regions = frozenset(named[0].regions)
    return [f for f in named if not regions.intersection(f.regions)]


def needs_image_answer(info: SeriesInfo) -> bool:
    """Whether :func:`normalise_body_part` would ask the image classifier about a series.

    It asks when no header names a region, or when the headers name regions that
    contradict each other.
    """
    named = [f for f in _findings(info) if f.regions]
    return not named or bool(_conflicts(named))


def normalise_body_part(
    info: SeriesInfo,
    classifier: BodyRegionClassifier | None = None,
    *,
    min_confidence: float = 0.5,
) -> BodyPartDecision:
    """Decide the body region of a series from its headers, and explain the decision.

    Order of trust: BodyPartExamined (0018,0015; PS3.16 Annex L terms and common variants),
    AnatomicRegionSequence (0008,2218; SNOMED CT codes of CID 4031), keywords in
    SeriesDescription, ProtocolName and StudyDescription, then ``classifier``. The first
    source that names a region decides. Sources naming only other regions are reported
    as conflicts; with a classifier, a conflict is settled by the classifier when its
    confidence reaches ``min_confidence``.

    Parameters
    ----------
    info:
        The series summary.
    classifier:
        Optional image-based hook, see :class:`BodyRegionClassifier`.
    min_confidence:
        Classifier answers below this are not used.

    Returns
    -------
    BodyPartDecision
        The region, its source and a one-line explanation; UNKNOWN with source "none"
        when nothing names a region.
    """
    findings = _findings(info)
    unrecognised = [f"{f.source} {f.detail}" for f in findings if not f.regions]
    named = [f for f in findings if f.regions]
    if not named:
        why = "; ".join(unrecognised) if unrecognised else "no header names a body region"
        decided = _ask(classifier, info, min_confidence, f"headers: {why}")
        if decided is not None:
            return decided
        return BodyPartDecision(BodyPart.UNKNOWN, "none", f"UNKNOWN (no source): {why}")
    first = named[0]
    regions = frozenset(first.regions)
    conflicts = _conflicts(named)
    text = f"{_names(first.regions)} from {first.source} {first.detail}"
    if not conflicts:
        return BodyPartDecision(first.regions[0], first.source, text, regions)
    conflict_text = "; ".join(f"{f.source} {f.detail} says {_names(f.regions)}" for f in conflicts)
    sources = tuple(dict.fromkeys(f.source for f in conflicts))
    summary = f"conflict: {text}, but {conflict_text}"
    decided = _ask(classifier, info, min_confidence, summary)
    if decided is not None:
        return BodyPartDecision(
            decided.body_part, decided.source, decided.explanation, decided.regions, sources
        )
    why = "no image classifier" if classifier is None else "image classifier undecided"
    kept = f"{text}; conflict: {conflict_text}; kept {first.source} ({why})"
    return BodyPartDecision(first.regions[0], first.source, kept, regions, sources)


def _ask(
    classifier: BodyRegionClassifier | None,
    info: SeriesInfo,
    min_confidence: float,
    context: str,
) -> BodyPartDecision | None:
    if classifier is None:
        return None
    answer = classifier(info)
    if answer is None:
        return None
    part, confidence = answer
    if confidence < min_confidence:
        return None
    part = BodyPart(part)
    return BodyPartDecision(
        part,
        "image classifier",
        f"{part.value} from image classifier (confidence {confidence:.2f}); {context}",
    )
