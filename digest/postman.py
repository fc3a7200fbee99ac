"""Sending the mail of the web app and the email commands: through ``[smtp]``, else the sink."""

from __future__ import annotations

import dataclasses
import threading

from digest.config import Settings
from digest.mailer import SmtpTransport
from digest.sink import Sink


class Postman:
    """Sends the web app's mail: through ``[smtp]`` when a host is set, else into the sink.

    With no relay, :meth:`start` (run by the app's lifespan, i.e. for as long as ``digest
    serve`` runs) starts one embedded SMTP sink; without a lifespan (an app used bare), each
    send starts and stops its own sink, which is slower but never leaves a server running.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sink: Sink | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the embedded sink when mail has nowhere else to go."""
        with self._lock:
            if not self.settings.smtp.host and self._sink is None:
                self._sink = self._new_sink().start()

    def stop(self) -> None:
        """Stop the embedded sink, if one runs."""
        with self._lock:
            sink, self._sink = self._sink, None
        if sink is not None:
            sink.stop()

    def _new_sink(self) -> Sink:
        s = self.settings.sink
        return Sink(self.settings.path(s.maildir), host=s.host, port=s.port)

    def send(self, to_addr: str, data: bytes) -> None:
        """Send one message now; SendError when it cannot be handed over."""
        smtp = self.settings.smtp
        if smtp.host:
            with SmtpTransport(smtp) as transport:
                transport.send(smtp.from_address, to_addr, data)
            return
        # The sink is on loopback and speaks neither TLS nor AUTH.
        local = dataclasses.replace(smtp, security="none", username="")
        sink = self._sink
        if sink is not None:
            with SmtpTransport(
                local, host_override=sink.host, port_override=sink.port
            ) as transport:
                transport.send(smtp.from_address, to_addr, data)
            return
        with (
            self._new_sink() as own,
            SmtpTransport(local, host_override=own.host, port_override=own.port) as transport,
        ):
            transport.send(smtp.from_address, to_addr, data)
