"""The slow, obvious way to make each mail: the oracle tests compare the fast path with, and the
baseline the benchmarks time it against (bench/render_mime.py puts this folder on its path).

- rendering: Jinja with its own autoescape on the templates as written, then premailer on
  every rendered message, where :class:`digest.render.Renderer` inlines the CSS into each
  template once and escapes in ``finalize``;
- MIME: the stdlib's ``EmailMessage``, where :func:`digest.mailer.build_message` writes the
  bytes itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import jinja2

from digest import mailer
from digest.render import (
    CONFIRM_HTML,
    CONFIRM_TEXT,
    DIGEST_HTML,
    DIGEST_TEXT,
    ConfirmContext,
    DigestContext,
    Rendered,
    Renderer,
    char_refs,
    make_premailer,
)


def autoescape_environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    """The renderer's Jinja settings, with Jinja's own autoescape (markupsafe) for the HTML
    templates, where the renderer escapes in ``finalize`` (render.make_environment)."""
    return jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


class ReferenceRenderer:
    """Renders as ``renderer`` does, but with premailer run on each message (slow)."""

    def __init__(self, renderer: Renderer) -> None:
        source = renderer.source
        assert source is not None, "a Renderer made by Renderer.create or from_source"
        self.renderer = renderer
        self.env = autoescape_environment(jinja2.FileSystemLoader(str(source.root)))
        self.css = source.css

    def inline_css(self, html: str) -> str:
        """premailer on a rendered page, the result in ASCII as the inline-once path makes it."""
        return char_refs(str(make_premailer(self.css).transform(html)))

    def _mail(self, values: Mapping[str, Any], html: str, text: str) -> Rendered:
        return Rendered(
            subject=values["subject"],
            html=self.inline_css(self.env.get_template(html).render(values)),
            text=self.env.get_template(text).render(values),
        )

    def render_digest(self, ctx: DigestContext) -> Rendered:
        """The digest through Jinja on the raw template, then premailer."""
        return self._mail(self.renderer.digest_values(ctx), DIGEST_HTML, DIGEST_TEXT)

    def render_confirm(self, ctx: ConfirmContext) -> Rendered:
        """The confirmation mail through Jinja on the raw template, then premailer."""
        return self._mail(self.renderer.confirm_values(ctx), CONFIRM_HTML, CONFIRM_TEXT)


def build_message(
    *,
    from_addr: str,
    from_name: str,
    to_addr: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    list_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """The message :func:`digest.mailer.build_message` makes, built with ``EmailMessage``.

    The header values are checked and cleaned by the same function as the fast builder's
    (``mailer._headers``), so the two differ only in how they are written.
    """
    headers = mailer._headers(
        from_addr=from_addr,
        from_name=from_name,
        to_addr=to_addr,
        subject=subject,
        message_id=message_id,
        date=date,
        list_id=list_id,
        unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        extra_headers=extra_headers,
    )
    msg = EmailMessage()
    for name, value in headers:
        if name == "From":
            msg[name] = Address(
                mailer.clean_header(from_name)[: mailer.NAME_MAX],
                addr_spec=mailer._address(from_addr, "sender"),
            )
        elif name == "List-Unsubscribe":
            msg[name] = value.replace("\r\n", "")
        elif name != "MIME-Version":
            msg[name] = value
    msg.set_content(text.replace("\r\n", "\n").replace("\r", "\n"))
    msg.add_alternative(html.replace("\r\n", "\n").replace("\r", "\n"), subtype="html")
    return msg.as_bytes(policy=SMTP_POLICY)
