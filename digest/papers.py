"""Papers as sources give them (:class:`PaperIn`), normalised and keyed the same way everywhere."""

from __future__ import annotations

import dataclasses
from datetime import datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaperIn:
    """One paper from one source, already cleaned: plain-text fields, bounded sizes."""

    key: str  # canonical: "arxiv:2411.01234" (no version), "doi:10.x/y", or "title:<sha1 of normalised title>"
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    url: str | None = None  # the abstract page
    pdf_url: str | None = None
    code_url: str | None = None
    published_at: datetime | None = None  # UTC, aware
    upvotes: int | None = None
    comments: int | None = None
