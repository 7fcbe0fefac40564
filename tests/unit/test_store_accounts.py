"""Store: web users, API tokens and sessions: only hashes kept, roles checked, revoked and
expired tokens refused, an unknown user as slow to refuse as a wrong password (SQLite file)."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

import dicom_ai_node
from dicom_ai_node.errors import Conflict, NotFound
from dicom_ai_node.settings import WEB_ROLES
from dicom_ai_node.store import accounts
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.tables import ApiToken, WebSession, WebUser

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.migrate()
    yield database
    database.dispose()


def test_a_user_logs_in_with_their_password_only(db: Database) -> None:
    accounts.add_user(db.session, "ann", "correct horse", "operator", T0)
    assert accounts.verify_login(db.session, "ann", "correct horse") == ("ann", "operator")
    assert accounts.verify_login(db.session, "ann", "wrong") is None
    assert accounts.verify_login(db.session, "bob", "correct horse") is None
    with db.session() as session:
        stored = session.scalars(select(WebUser.password_hash)).one()
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    users = accounts.list_users(db.session)
    assert [(u.username, u.role, u.created_at, u.disabled) for u in users] == [
        ("ann", "operator", T0, False)
    ]


def test_roles_and_names_are_checked(db: Database) -> None:
    with pytest.raises(ValueError, match="viewer, operator, admin"):
        accounts.add_user(db.session, "ann", "pw", "root", T0)
    with pytest.raises(ValueError, match="user name"):
        accounts.add_user(db.session, "a b", "pw", "viewer", T0)
    with pytest.raises(ValueError, match="password"):
        accounts.add_user(db.session, "ann", "", "viewer", T0)
    accounts.add_user(db.session, "ann", "pw", "Admin", T0)
    with pytest.raises(Conflict, match="ann"):
        accounts.add_user(db.session, "ann", "pw", "viewer", T0)
    with pytest.raises(ValueError, match="allowed"):
        accounts.add_token(db.session, "ci", "superuser", None, "", T0)
    assert accounts.list_users(db.session)[0].role == "admin"


def test_a_new_password_ends_sessions_and_removal_ends_the_user(db: Database) -> None:
    accounts.add_user(db.session, "ann", "old", "viewer", T0)
    sid, _csrf = accounts.new_session(db.session, "ann", "viewer", T0, 60)
    accounts.set_password(db.session, "ann", "new")
    assert accounts.session_principal(db.session, sid, T0) is None
    assert accounts.verify_login(db.session, "ann", "old") is None
    assert accounts.verify_login(db.session, "ann", "new") == ("ann", "viewer")
    sid, _csrf = accounts.new_session(db.session, "ann", "viewer", T0, 60)
    accounts.remove_user(db.session, "ann")
    assert accounts.session_principal(db.session, sid, T0) is None
    assert accounts.verify_login(db.session, "ann", "new") is None
    with pytest.raises(NotFound):
        accounts.remove_user(db.session, "ann")
    with pytest.raises(NotFound):
        accounts.set_password(db.session, "ann", "x")


def test_a_disabled_user_cannot_log_in(db: Database) -> None:
    accounts.add_user(db.session, "ann", "pw", "viewer", T0)
    with db.session.begin() as session:
        session.scalars(select(WebUser)).one().disabled = True
    assert accounts.verify_login(db.session, "ann", "pw") is None


def test_an_unknown_user_takes_as_long_as_a_wrong_password(db: Database) -> None:
    accounts.add_user(db.session, "ann", "pw", "viewer", T0)
    accounts.verify_login(db.session, "nobody", "pw")  # the dummy hash is made once

    def timed(name: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert accounts.verify_login(db.session, name, "wrong") is None
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    known, unknown = timed("ann"), timed("nobody")
    assert unknown > 0.5 * known, (known, unknown)


def test_a_token_is_shown_once_and_stored_hashed(db: Database) -> None:
    pk, text = accounts.add_token(db.session, "ci", "viewer", None, "", T0)
    assert text.startswith("dan_") and len(text) > 40
    with db.session() as session:
        row = session.get(ApiToken, pk)
        assert row is not None
        assert row.token_hash == hashlib.sha256(text.encode()).hexdigest()
    assert accounts.token_principal(db.session, text, T0) == ("ci", "viewer")
    assert accounts.token_principal(db.session, text + "x", T0) is None
    assert accounts.token_principal(db.session, "not-a-token", T0) is None
    (info,) = accounts.list_tokens(db.session)
    assert (info.pk, info.name, info.username, info.last_used_at) == (pk, "ci", "", T0)
    assert not any(text in repr(v) for v in vars(info).values())


def test_revoked_and_expired_tokens_are_refused(db: Database) -> None:
    expires = T0 + dt.timedelta(days=1)
    _pk, expiring = accounts.add_token(db.session, "ci", "operator", expires, "ann", T0)
    revoked_pk, revoked = accounts.add_token(db.session, "old", "admin", None, "ann", T0)
    accounts.revoke_token(db.session, revoked_pk, T0)
    accounts.revoke_token(db.session, revoked_pk, T0 + dt.timedelta(hours=1))  # no change
    assert accounts.token_principal(db.session, revoked, T0) is None
    assert accounts.token_principal(db.session, expiring, expires - dt.timedelta(seconds=1))
    assert accounts.token_principal(db.session, expiring, expires) is None
    tokens = {t.pk: t for t in accounts.list_tokens(db.session)}
    assert tokens[revoked_pk].revoked_at == T0
    with pytest.raises(NotFound):
        accounts.revoke_token(db.session, 999, T0)
    with pytest.raises(ValueError, match="future"):
        accounts.add_token(db.session, "late", "viewer", T0, "", T0)


def test_token_use_is_recorded_at_most_once_a_minute(db: Database) -> None:
    _pk, text = accounts.add_token(db.session, "ci", "viewer", None, "", T0)
    for seconds in (0, 30, 59):
        accounts.token_principal(db.session, text, T0 + dt.timedelta(seconds=seconds))
    assert accounts.list_tokens(db.session)[0].last_used_at == T0
    accounts.token_principal(db.session, text, T0 + dt.timedelta(seconds=61))
    assert accounts.list_tokens(db.session)[0].last_used_at == T0 + dt.timedelta(seconds=61)


def test_a_session_holds_its_role_and_csrf_token_until_it_expires_or_ends(db: Database) -> None:
    sid, csrf = accounts.new_session(db.session, "ann", "operator", T0, 30)
    assert sid != csrf
    with db.session() as session:
        row = session.scalars(select(WebSession)).one()
        assert row.session_hash == hashlib.sha256(sid.encode()).hexdigest()
    later = T0 + dt.timedelta(minutes=29)
    assert accounts.session_principal(db.session, sid, later) == ("ann", "operator", csrf)
    assert accounts.session_principal(db.session, sid, T0 + dt.timedelta(minutes=30)) is None
    assert accounts.session_principal(db.session, "forged", T0) is None
    other, _ = accounts.new_session(db.session, "bob", "viewer", T0, 30)
    accounts.end_session(db.session, other)
    accounts.end_session(db.session, other)  # twice: nothing to do
    assert accounts.session_principal(db.session, other, T0) is None
    # a new sign-in sweeps the expired sessions away
    accounts.new_session(db.session, "cy", "viewer", T0 + dt.timedelta(hours=1), 30)
    with db.session() as session:
        assert session.scalars(select(WebSession.username)).all() == ["cy"]


def _defined_in(name: str) -> list[str]:
    """The package's modules that define ``name`` (a class, or a module-level assignment)."""
    package = Path(dicom_ai_node.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = (
                [node.name]
                if isinstance(node, ast.ClassDef)
                else [t.id for t in node.targets if isinstance(t, ast.Name)]
                if isinstance(node, ast.Assign)
                else []
            )
            if name in names:
                found.append(path.relative_to(package).as_posix())
    return found


def test_roles_outcomes_and_the_token_prefix_are_defined_once() -> None:
    assert accounts.ROLES is WEB_ROLES
    assert _defined_in("AssociationOutcome") == ["domain.py"]
    assert _defined_in("TOKEN_PREFIX") == ["store/accounts.py"]
