"""Send: the STOW-RS client: results delivered to a DICOMweb archive by HTTP POST.

Implements the origin-client side of the Store Transaction (PS3.18 10.5): the files
of one study go to ``{url}/studies/{study}`` (PS3.18 10.5.1) in requests of bounded
size, each streamed from disk as ``multipart/related; type="application/dicom"``
(the ``type`` parameter is always sent: Orthanc answers 415 without it), with
``Accept: application/dicom+json``. Each instance's outcome is read from the answer's
Referenced SOP Sequence (0008,1199) and Failed SOP Sequence (0008,1198) whatever the
HTTP status (PS3.18 10.5.3): a 400 or 409 may still have stored some instances.
Credentials are read from a file at each call and never logged nor put in a message.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ..dicomweb import DICOM_JSON, STOW_CONTENT_TYPE
from ..errors import ConfigError, DeliveryError
from .scu import StoreOutcome
from .stow_parts import (
    MAX_ANSWER_BYTES,
    StowAnswer,
    StowBody,
    StowPart,
    batches,
    bounded_answer,
    describe_reason,
    outcome,
    plan_part,
    read_answer,
    status_text,
    stored,
    whole_failure,
)

__all__ = ["AUTH_KINDS", "DEFAULT_BATCH_BYTES", "WebPeer", "stow_files", "stow_plan"]

logger = logging.getLogger(__name__)

#: How a DICOMweb destination authenticates: nothing, ``Authorization: Bearer <token>``
#: (RFC 6750) or ``Authorization: Basic`` (RFC 7617) from ``user:password``.
AUTH_KINDS = ("none", "bearer", "basic")
DEFAULT_BATCH_BYTES = 32 * 2**20
#: Answers that speak per instance even when they name none: the request reached the
#: archive's store logic (PS3.18 10.5.3: 200, 202; 400 bad request; 409 conflict).
_PER_INSTANCE = frozenset({200, 202, 400, 409})
_DELIVERED = frozenset({200, 202})


@dataclass(frozen=True)
class WebPeer:
    """A DICOMweb destination (PS3.18 8.2: the service's base URL).

    Parameters
    ----------
    url:
        Base URL, e.g. ``https://pacs.example/dicom-web``; ``http`` or ``https``,
        no user name or password in it (they belong in ``credentials_file``).
    auth:
        One of :data:`AUTH_KINDS`.
    credentials_file:
        For ``bearer`` the token, for ``basic`` ``user:password``, on one line.
    ca_file:
        PEM certificates of the authorities trusted for an ``https`` URL; the system's
        store when empty. Certificates are always verified.

    Raises
    ------
    ConfigError
        If a value is invalid (the message never holds a credential).
    """

    url: str
    auth: str = "none"
    credentials_file: str = ""
    ca_file: str = ""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"a DICOMweb URL must be http:// or https://host/..., not {self}")
        if parts.username is not None or parts.password is not None:
            raise ConfigError("a DICOMweb URL must not hold credentials; use credentials_file")
        if parts.query or parts.fragment:
            raise ConfigError(f"a DICOMweb base URL has no query or fragment: {self}")
        if self.auth not in AUTH_KINDS:
            raise ConfigError(f"auth must be one of {', '.join(AUTH_KINDS)}, not {self.auth!r}")
        if self.auth != "none" and not self.credentials_file:
            raise ConfigError(f"auth = {self.auth!r} needs a credentials_file")

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"

    def study_url(self, study_instance_uid: str) -> str:
        """``{url}/studies/{study}``: where one study's instances are stored (PS3.18 10.5.1)."""
        return f"{self.url.rstrip('/')}/studies/{study_instance_uid}"

    def authorization(self) -> httpx.Auth | None:
        """The request's credentials, read from ``credentials_file`` now (so a rotated
        token is used at the next attempt).

        Raises
        ------
        ConfigError
            If the file cannot be read, is empty, or a basic one has no ``:``.
        """
        if self.auth == "none":
            return None
        try:
            lines = Path(self.credentials_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError(
                f"cannot read credentials_file {self.credentials_file}: {why}"
            ) from None  # a decode error holds bytes of the secret
        secret = lines[0].strip() if lines else ""
        if not secret:
            raise ConfigError(f"credentials_file {self.credentials_file} is empty")
        if self.auth == "bearer":
            return _Bearer(secret)
        user, colon, password = secret.partition(":")
        if not colon:
            raise ConfigError(
                f"credentials_file {self.credentials_file} must hold user:password for basic"
            )
        return httpx.BasicAuth(user, password)

    def ssl_context(self) -> ssl.SSLContext:
        """Certificate and host name always checked; TLS 1.2 or later (BCP 195)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load ca_file {self.ca_file}: {exc}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


class _Bearer(httpx.Auth):
    """``Authorization: Bearer <token>`` (RFC 6750 2.1); the token is never repr'd."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def __repr__(self) -> str:
        return "_Bearer(<hidden>)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class _WholeFailure(Exception):
    """A request the archive answered for none of its instances (or never answered)."""


class _Sender:
    """Sends batches over one HTTP client and keeps each instance's outcome."""

    def __init__(self, client: httpx.Client, peer: WebPeer, timeout_s: float) -> None:
        self.client, self.peer, self.timeout_s = client, peer, timeout_s
        self.outcomes: dict[int, StoreOutcome] = {}

    def record(self, index: int, result: StoreOutcome) -> None:
        """Keep an outcome; a not delivered one is logged (UIDs only)."""
        self.outcomes[index] = result
        if not result.delivered:
            logger.warning(
                "instance not delivered to %s: %s",
                self.peer,
                result.message,
                extra={"sop_instance_uid": result.sop_instance_uid},
            )

    @property
    def delivered(self) -> int:
        """Instances delivered so far."""
        return sum(o.delivered for o in self.outcomes.values())

    def post(self, batch: list[StowPart]) -> httpx.Response:
        """POST one batch; :class:`_WholeFailure` when no answer came."""
        boundary = uuid.uuid4().hex
        body = StowBody(batch, boundary)
        headers = {
            "Content-Type": f"{STOW_CONTENT_TYPE}; boundary={boundary}",
            "Accept": DICOM_JSON,
            "Content-Length": str(body.length),
        }
        url = self.peer.study_url(batch[0].study_instance_uid)
        request = self.client.build_request("POST", url, content=iter(body), headers=headers)
        try:
            response = self.client.send(request, stream=True)
            try:
                content = bounded_answer(response)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise _WholeFailure(f"no answer from {self.peer} within {self.timeout_s:g} s") from exc
        except httpx.ConnectError as exc:
            raise _WholeFailure(
                f"cannot connect to {self.peer} (refused, unreachable, or the TLS handshake"
                f" failed: certificate not trusted or not for this host): {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise _WholeFailure(f"request to {self.peer} failed: {exc}") from exc
        if content is None:
            raise _WholeFailure(f"the answer of {self.peer} is over {MAX_ANSWER_BYTES} bytes")
        decoded = [(k, v) for k, v in response.headers.items() if k.lower() != "content-encoding"]
        return httpx.Response(response.status_code, headers=decoded, content=content)

    def send(self, batch: list[StowPart], *, alone: bool = False) -> None:
        """Send one batch and record each instance's outcome.

        Instances that a per-instance answer (200, 202, 400, 409) leaves unnamed are sent
        again one per request, once, so that a broken part the archive cannot name does
        not hold back the good ones (a re-POST of a stored instance is idempotent).
        """
        try:
            response = self.post(batch)
        except OSError as exc:  # a file could not be read while streaming
            for part in batch:
                self.record(part.index, outcome(part, None, False, f"not sent: {exc}"))
            return
        code = response.status_code
        answer = read_answer(response.content)
        if code not in _PER_INSTANCE and (answer is None or not answer.names_any):
            raise _WholeFailure(whole_failure(response, str(self.peer)))
        unnamed = self.judge(batch, response, answer or StowAnswer())
        if unnamed and not alone and len(batch) > 1:
            for part in unnamed:
                self.send([part], alone=True)
            return
        for part in unnamed:
            self.record(part.index, self.unnamed(part, response, answer))

    def judge(
        self, batch: list[StowPart], response: httpx.Response, answer: StowAnswer
    ) -> list[StowPart]:
        """Record every instance the answer names; return the ones it does not."""
        status = status_text(response)
        unnamed = []
        for part in batch:
            uid = part.sop_instance_uid
            if uid in answer.failed:
                reason = answer.failed[uid]
                why = f"failure reason {describe_reason(reason)}" if reason is not None else ""
                message = f"refused by {self.peer} ({status}){': ' + why if why else ''}"
                self.record(part.index, outcome(part, reason, False, message))
            elif uid in answer.stored:
                warning = answer.stored[uid] if answer.stored[uid] is not None else answer.warning
                self.record(part.index, stored(part, status, warning))
            else:
                unnamed.append(part)
        return unnamed

    def unnamed(
        self, part: StowPart, response: httpx.Response, answer: StowAnswer | None
    ) -> StoreOutcome:
        """An instance the answer does not name: stored only on a bare 200 or 202."""
        status = status_text(response)
        if response.status_code in _DELIVERED and (answer is None or not answer.names_any):
            warning = answer.warning if answer is not None else None
            return stored(part, f"{status}, no per-instance answer", warning)
        return outcome(
            part, None, False, f"not confirmed by {self.peer} ({status}); sent again next time"
        )


def stow_files(
    paths: Sequence[Path],
    peer: WebPeer,
    *,
    timeout_s: float,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> list[StoreOutcome]:
    """Store DICOM files in a DICOMweb archive with STOW-RS (PS3.18 10.5).

    The files are grouped by Study Instance UID (read from each header, without the
    pixels) and each group is POSTed to ``{url}/studies/{study}`` in requests holding at
    most ``batch_bytes`` of files (a larger file goes alone), streamed from disk.

    Parameters
    ----------
    paths:
        PS3.10 files.
    peer:
        The archive.
    timeout_s:
        Connect, write, read and pool timeout of each request, in seconds.
    batch_bytes:
        The most file bytes in one request: bounds what the archive must take in at once.

    Returns
    -------
    list[StoreOutcome]
        One per path, in order. Stored (200, or 202 / a Warning Reason: delivered with
        the warning in the message and the Warning Reason as ``status``); refused (named
        in the Failed SOP Sequence: not delivered, ``status`` its Failure Reason); not
        named by a 400/409 answer even when sent alone: not delivered, to be sent again.
        When a request fails as a whole after some instances were delivered, the
        instances not yet answered are not delivered with that reason.

    Raises
    ------
    DeliveryError
        When a request fails as a whole (connection refused, TLS, timeout, 401, 403,
        415, 5xx and other answers naming no instance) before any instance was delivered.
    ConfigError
        If ``timeout_s`` or ``batch_bytes`` is not positive, or the credentials or CA
        file cannot be read.
    """
    plan = [plan_part(index, Path(path)) for index, path in enumerate(paths)]
    return stow_plan(plan, peer, timeout_s=timeout_s, batch_bytes=batch_bytes)


def stow_plan(
    plan: Sequence[StowPart | StoreOutcome],
    peer: WebPeer,
    *,
    timeout_s: float,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> list[StoreOutcome]:
    """Send planned parts (:func:`~.stow_parts.plan_part`) as :func:`stow_files` does.

    Parameters
    ----------
    plan:
        Item ``i`` is the part whose ``index`` is ``i``, or the outcome of a file that
        cannot be sent. Tests use it to send a part under another study's URL.
    peer, timeout_s, batch_bytes:
        As for :func:`stow_files`.

    Returns
    -------
    list[StoreOutcome]
        One per item, in order.

    Raises
    ------
    DeliveryError, ConfigError
        As for :func:`stow_files`.
    """
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be positive, not {timeout_s!r}")
    if batch_bytes <= 0:
        raise ConfigError(f"batch_bytes must be positive, not {batch_bytes!r}")
    client = httpx.Client(
        auth=peer.authorization(),
        verify=peer.ssl_context(),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,  # never carry the credentials elsewhere
        trust_env=False,  # no proxy, .netrc or CA bundle from the environment
    )
    with client:
        sender = _Sender(client, peer, timeout_s)
        planned: list[StowPart] = []
        for index, item in enumerate(plan):
            if isinstance(item, StoreOutcome):
                sender.record(index, item)
            else:
                planned.append(item)
        todo = batches(planned, batch_bytes)
        logger.info("sending %d instances to %s in %d request(s)", len(planned), peer, len(todo))
        for number, batch in enumerate(todo):
            try:
                sender.send(batch)
            except _WholeFailure as exc:
                if not sender.delivered:
                    raise DeliveryError(str(exc)) from exc
                left = [p for b in todo[number:] for p in b if p.index not in sender.outcomes]
                for part in left:
                    sender.record(part.index, outcome(part, None, False, f"not sent: {exc}"))
                break
    return [sender.outcomes[i] for i in range(len(plan))]
