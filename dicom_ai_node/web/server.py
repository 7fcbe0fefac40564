"""Web: the HTTP listener, uvicorn in a thread of the node's process.

uvicorn serves the ASGI application on its own event loop; endpoints that touch the
index run in its worker threads, so the DICOM listener's threads are never waited on.
The socket is bound before :meth:`WebServer.start` returns, so a port that is taken fails
the start with a clear error instead of a log line later. Keep-alive is bounded
(``timeout_keep_alive``), and so is a request head still arriving (h11's limit on an
incomplete event); a whole head over the limit is refused 431 by the application's
``BodyLimit``. A slow client holds one coroutine, never a thread.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from ..errors import ConfigError

__all__ = ["WebServer"]

#: Largest request head (request line and headers) h11 buffers, in bytes.
MAX_HEAD_BYTES = 16 * 1024


class WebServer:
    """Serve ``app`` on ``host:port`` (0 picks a free port) until :meth:`stop`.

    Parameters
    ----------
    app:
        The ASGI application.
    host, port:
        Where to listen.
    certificate, private_key:
        Serve HTTPS with this certificate and key (PEM); None serves HTTP.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        certificate: Path | None = None,
        private_key: Path | None = None,
    ) -> None:
        self.host = host
        self.tls = certificate is not None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each connection: without it a
        # keep-alive answer waits about 40 ms for the client's delayed ACK (Nagle)
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise ConfigError(f"web: cannot listen on {host}:{port}: {exc.strerror}") from exc
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            lifespan="off",
            proxy_headers=False,
            ssl_certfile=str(certificate) if certificate else None,
            ssl_keyfile=str(private_key) if private_key else None,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The service's base URL."""
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> None:
        """Start serving in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, finish the requests in flight (bounded), close the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._sock.close()
