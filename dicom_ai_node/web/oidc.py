"""Web: OpenID Connect bearer tokens, checked against the issuer's keys (RFC 7519, 7517).

A token is accepted when its signature verifies with a key of the configured JWKS (the
``kid`` picks it; RS256, PS256 and ES256 only), it has not expired, and its ``iss`` and
``aud`` are the configured ones. The role is the highest of the node's roles named in the
role claim (a string or a list); a token naming none is refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt

from ..errors import ConfigError
from ..settings import WEB_ROLES, WebSettings

__all__ = ["OidcVerifier"]

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "PS256", "ES256"]
#: Seconds between two fetches of the JWKS for a key id it did not have.
REFRESH_INTERVAL_S = 60.0


class OidcVerifier:
    """Checks OIDC access tokens of one issuer.

    Parameters
    ----------
    settings:
        ``[web]``: issuer, audience, JWKS (file or URL), role and username claims.
    base:
        Folder that a relative JWKS file is resolved against.

    Raises
    ------
    ConfigError
        When the JWKS file cannot be read or holds no usable key.
    """

    def __init__(self, settings: WebSettings, base: Path) -> None:
        self.settings = settings
        self._keys: jwt.PyJWKSet | None = None
        self._client: jwt.PyJWKClient | None = None
        if settings.oidc_jwks_file:
            path = Path(settings.oidc_jwks_file)
            path = path if path.is_absolute() else base / path
            try:
                self._keys = jwt.PyJWKSet.from_dict(json.loads(path.read_text("utf-8")))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ConfigError(f"web.oidc_jwks_file {path}: {exc}") from exc
        else:
            self._client = jwt.PyJWKClient(
                settings.oidc_jwks_url, cache_jwk_set=True, lifespan=300, timeout=5
            )
        self._refreshed_at = -REFRESH_INTERVAL_S

    def _key(self, token: str) -> Any:
        kid = jwt.get_unverified_header(token).get("kid")
        if self._client is not None:
            keys = self._client.get_signing_keys()  # cached for the client's lifespan
            if kid is not None and all(k.key_id != kid for k in keys):
                # a key the cache does not know: fetch the set again, at most once a minute,
                # so tokens with made-up key ids cannot make the node fetch on each request
                now = time.monotonic()
                if now - self._refreshed_at >= REFRESH_INTERVAL_S:
                    self._refreshed_at = now
                    keys = self._client.get_signing_keys(refresh=True)
        else:
            assert self._keys is not None
            keys = self._keys.keys
        for key in keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise jwt.InvalidTokenError("no key of the JWKS has this token's kid")

    def verify(self, token: str) -> tuple[str, str] | None:
        """The user and role (a name of ``WEB_ROLES``) of a valid token; None (logged,
        never the token's text) otherwise."""
        cfg = self.settings
        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=ALGORITHMS,
                audience=cfg.oidc_audience or None,
                issuer=cfg.oidc_issuer,
                options={"require": ["exp", "iss", "sub"]},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            log.info("OIDC token refused: %s", type(exc).__name__)
            return None
        named = claims.get(cfg.oidc_role_claim, [])
        named = [named] if isinstance(named, str) else named
        roles = [r for r in WEB_ROLES if isinstance(named, list) and r in named]
        if not roles:
            log.info(
                "OIDC token refused: no role of %s in claim %s", WEB_ROLES, cfg.oidc_role_claim
            )
            return None
        user = claims.get(cfg.oidc_username_claim) or claims["sub"]
        return str(user)[:64], roles[-1]
