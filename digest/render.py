"""Rendering: a digest or a confirmation as a subject, an HTML part and a plain-text part.

The CSS in ``templates/email/base.css`` is inlined into each HTML template once, when the
:class:`Renderer` is created, so that per message only Jinja runs: inlining is by far the
slowest step of a naive render. Rendering is pure: no clock, no database, no network.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import jinja2
from markupsafe import Markup, escape

from digest.errors import TemplateError
from digest.resources import templates_dir

DIGEST_HTML = "email/digest.html.j2"
DIGEST_TEXT = "email/digest.txt.j2"
CONFIRM_HTML = "email/confirm.html.j2"
CONFIRM_TEXT = "email/confirm.txt.j2"
CSS_FILE = "email/base.css"
INLINED_TEMPLATES = (DIGEST_HTML, CONFIRM_HTML)
TEMPLATES = (*INLINED_TEMPLATES, DIGEST_TEXT, CONFIRM_TEXT)

SUBJECT_MAX = 150
SNIPPET_CHARS = 420
TITLE_MAX = 300
REASON_MAX = 300
AUTHOR_MAX = 80
AUTHORS_SHOWN = 3
KEYWORDS_SHOWN = 30
URL_MAX = 2048
TEXT_WIDTH = 72
EMPTY_NOTE = "No new papers matched your keywords in this edition."
MEMO_SIZE = 1 << 14  # papers' and reasons' parts kept per Renderer, then started over
# Snippets are kept apart, and more of them: a paper has a snippet for each set of marks
# within its reach (snippet_reach), and each one kept is one not made again.
SNIPPET_MEMO_SIZE = 1 << 15
# Gmail shows "[Message clipped]" past about 102 kB of HTML, hiding what follows: the footer
# and its unsubscribe link. A digest's HTML stays within this many characters (it is ASCII).
HTML_BUDGET = 100_000
# Over the budget, the first papers keep their snippets, the others get shorter ones, and
# then fewer papers are shown, the rest in the browser (the view link).
FULL_SNIPPETS = 3
SHORTER_SNIPPETS = (200, 100, 0)

# Added per message, after inlining, so it must carry its own style (a .hl @media rule in
# base.css overrides it in dark mode). The line end inside the tag (white space between its
# attributes) keeps a snippet with many marks within 998 octets a line, so it goes as is.
MARK_OPEN = Markup(
    '<mark class="hl"\nstyle="background-color:#fff1a8;color:#1f2328;padding:0 1px;">'
)
MARK_CLOSE = Markup("</mark>")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# C0/C1 controls, the Unicode line/paragraph separators, bidi overrides and isolates (which
# can make a title or sender read backwards) and BOMs; tabs and newlines are whitespace.
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)
_SPACE = re.compile(r"\s+")
_NON_SPACE = re.compile(r"\S")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
# Where character references are not read as characters: raw text elements and comments.
_NO_REFS = re.compile(r"<(?:(style|script)\b.*?</\1\s*>|!--.*?-->)", re.DOTALL | re.IGNORECASE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigestItem:
    """One ranked paper as it appears in a digest."""

    key: str
    title: str
    url: str
    authors: tuple[str, ...]
    abstract: str
    upvotes: int | None
    score: float
    reason: str
    highlight: tuple[tuple[int, int], ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigestContext:
    """Everything one subscriber's digest for one edition shows."""

    site_name: str
    base_url: str
    recipient: str
    edition: str
    edition_label: str
    items: tuple[DigestItem, ...]
    keywords: tuple[str, ...]
    unsubscribe_url: str
    preferences_url: str
    view_url: str | None = None
    empty_note: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfirmContext:
    """What the confirm-your-subscription mail shows."""

    site_name: str
    base_url: str
    recipient: str
    confirm_url: str
    keywords: tuple[str, ...] = ()
    expires_note: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rendered:
    """A rendered mail: a header-safe subject and the two bodies (the HTML in ASCII)."""

    subject: str
    html: str
    text: str


class _ItemView(NamedTuple):
    # A NamedTuple, quicker to make than a frozen dataclass: one is made per paper of a digest.
    title: str
    title_html: str
    url: str
    authors: str
    authors_html: str
    snippet_html: Markup
    snippet_text: str
    reason: str
    reason_html: str
    reason_text: str
    upvotes: int | None


def one_line(value: str, limit: int | None = None) -> str:
    """Drop control characters, collapse whitespace to single spaces, bound to ``limit``."""
    if limit is not None and len(value) > limit * 4:
        value = value[: limit * 4]  # bound the regex work on hostile input
    if value.isprintable() and "  " not in value:  # the common case, without the regexes
        value = value.strip()
    else:
        value = _SPACE.sub(" ", _CONTROL.sub("", value)).strip()
    return value if limit is None else truncate(value, limit)


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to at most ``limit`` characters, at a word boundary when one is near."""
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


# an http(s) URL with a host, as urlsplit splits it: the scheme, "//", then the netloc up to
# the first / ? or #
_HTTP_URL = re.compile(r"(?i:https?)://([^/?#]+)")


def safe_url(value: str) -> str:
    """``value`` when it is a plain http(s) URL, else ``""`` (no javascript:, no data:)."""
    url = value.strip()
    if not url or len(url) > URL_MAX or _CONTROL.search(url) or _SPACE.search(url):
        return ""
    found = _HTTP_URL.match(url)
    if found is not None and "[" not in found.group(1) and "]" not in found.group(1):
        return url  # what urlsplit would say, without its cost (every link of a digest)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a bad [IPv6] host
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    return url


def short_date(edition: str, fallback: str) -> str:
    """``2026-11-22`` as ``22 Nov 2026``; any other edition name (a week) as ``fallback``."""
    try:
        day = date.fromisoformat(edition) if _ISO_DAY.fullmatch(edition) else None
    except ValueError:
        day = None
    if day is None:
        return one_line(fallback or edition, 40)
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def digest_subject(ctx: DigestContext) -> str:
    """``Your digest for 22 Nov 2026: <top title> (+9 more)``, one line, at most 150 chars."""
    head = f"Your digest for {short_date(ctx.edition, ctx.edition_label)}"
    if not ctx.items:
        return one_line(f"{head}: no new papers", SUBJECT_MAX)
    more = len(ctx.items) - 1
    tail = f" (+{more} more)" if more else ""
    room = SUBJECT_MAX - len(head) - len(": ") - len(tail)
    title = one_line(ctx.items[0].title, max(room, 10)) or "untitled"
    return one_line(f"{head}: {title}{tail}", SUBJECT_MAX)


def _spans(
    highlight: list[tuple[int, int]], text: str, start: int, end: int
) -> list[tuple[int, int]]:
    """Clip the spans (sorted) to [start, end), trim whitespace at their edges, merge overlaps."""
    clipped: list[tuple[int, int]] = []
    # those starting at or past the end clip to nothing: skip them (most of a long abstract's)
    for span in highlight[: bisect.bisect_left(highlight, (end,))]:
        s, e = max(int(span[0]), start), min(int(span[1]), end)
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            clipped.append((s, e))
    clipped.sort()
    merged: list[tuple[int, int]] = []
    for s, e in clipped:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _text_start(abstract: str, spans: list[tuple[int, int]]) -> tuple[int, int | None] | None:
    """Where the text starts (its first non-space), and the least start of a non-empty span
    (sorted) from there; None for a blank text. Both build_snippet and snippet_reach place a
    snippet by these."""
    found = _NON_SPACE.search(abstract)
    if found is None:
        return None
    start = found.start()
    return start, next((s for s, e in spans if s >= start and e > s), None)


def build_snippet(
    abstract: str, highlight: Iterable[tuple[int, int]] = (), *, limit: int = SNIPPET_CHARS
) -> tuple[Markup, str]:
    """The abstract cut to ``limit`` chars at a word boundary, as (marked HTML in ASCII, marked
    text).

    The HTML is built from the original text: its pieces are joined with a control character
    where a mark or an ellipsis goes (feed text has none left), escaped, and only then are
    those made marks: never marked-then-escaped, never marks laid over escaped text (the spans
    count characters of the original). The text version marks the same spans like *this*, and
    its ellipses are "...": a plain part in ASCII goes as it is (7bit), where one "…" would
    make the whole part quoted-printable.
    """
    spans = sorted(highlight)
    where = _text_start(abstract, spans)
    if where is None:
        return Markup(""), ""
    start, first = where
    end = len(abstract)
    cut = end - start > limit
    lead = False
    if cut and first is not None and first > start + limit * 2 // 3:
        # The first match lies past the cut: start at its sentence, so the reader sees why.
        back = abstract.rfind(". ", start, first)
        if back != -1 and first - back < limit // 2:
            start = back + 2
        else:
            space = abstract.find(" ", max(start, first - limit // 3), first)
            start = space + 1 if space != -1 else first
        lead = True
        cut = end - start > limit
    if cut:
        window = abstract[start : start + limit + 1]
        space = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
        end = start + (space if space >= limit // 2 else limit)
        while end > start and abstract[end - 1].isspace():
            end -= 1
    pieces: list[str] = ["\2"] if lead else []
    pos = start
    shown = abstract[start:end]
    # In a clean text (the common case) every piece is clean: none needs cleaning.
    clean = str if shown.isprintable() and "  " not in shown else _clean_piece
    for s, e in _spans(spans, abstract, start, end):
        pieces += [clean(abstract[pos:s]), "\0", clean(abstract[s:e]), "\1"]
        pos = e
    pieces.append(clean(abstract[pos:end]))
    if cut:
        pieces.append("\2")
    marked = "".join(pieces)
    html = str(escape(marked))
    if not html.isascii():
        html = _refs(html)
    html = html.replace("\0", MARK_OPEN).replace("\1", MARK_CLOSE).replace("\2", "&#8230;")
    text = marked.replace("\0", "*").replace("\1", "*").replace("\2", "...").strip()
    # All the feed text went through escape() above; the marks are our constants.
    return Markup(html), text


def snippet_reach(
    abstract: str, highlight: Iterable[tuple[int, int]], limit: int = SNIPPET_CHARS
) -> tuple[tuple[int, int], ...]:
    """The spans of ``highlight`` (sorted) that a snippet of ``limit`` characters can show:
    ``build_snippet`` gives the same result with these as with all of them.

    A snippet starts at the abstract's first non-space or, when cut, at or before the first
    non-empty span from there; and it ends at most ``limit`` characters after its start. So a
    span starting ``limit`` or more characters after that first span cannot be in it. Readers
    whose matches differ only further down an abstract (most of those of a popular paper)
    get the same snippet, and :class:`Renderer` makes it once for all of them.
    """
    spans = sorted(highlight)
    where = _text_start(abstract, spans)
    if where is None:
        return ()
    first = where[1]
    if first is None:
        return tuple(spans)
    return tuple(spans[: bisect.bisect_left(spans, (first + limit,))])


def char_refs(html: str) -> str:
    """``html`` in ASCII: every other character as a numeric character reference, but in
    <style>, <script> and comments, where a reference would not be read as the character.

    A digest in ASCII with short lines goes as it is (7bit) in the mail, with no
    quoted-printable encoding to pay for or to decode.
    """
    if html.isascii():
        return html
    out: list[str] = []
    last = 0
    for match in _NO_REFS.finditer(html):
        out += [_refs(html[last : match.start()]), match.group(0)]
        last = match.end()
    out.append(_refs(html[last:]))
    return "".join(out)


def _refs(text: str) -> str:
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _clean_piece(piece: str) -> str:
    if piece.isprintable() and "  " not in piece:
        return piece
    return _SPACE.sub(" ", _CONTROL.sub("", piece))


def short_authors(authors: Iterable[str], shown: int = AUTHORS_SHOWN) -> str:
    """``A, B, C et al.`` when there are more than ``shown`` authors, else all of them."""
    names: list[str] = []
    extra = False
    for author in authors:
        name = one_line(author, AUTHOR_MAX)
        if not name:
            continue
        if len(names) == shown:
            extra = True
            break
        names.append(name)
    return ", ".join(names) + (" et al." if extra else "")


def _in_html(value: str) -> str:
    # Escaped and in ASCII once, for the HTML part (see Renderer._html); Markup passes
    # through Jinja's autoescape as it is.
    return value if value.isascii() else Markup(_refs(escape(value)))


def _paper_view(title: str, url: str, authors: tuple[str, ...]) -> dict[str, str]:
    title = one_line(title, TITLE_MAX) or "Untitled"
    names = short_authors(authors)
    return {
        "title": title,
        "title_html": _in_html(title),
        "url": safe_url(url),
        "authors": names,
        "authors_html": _in_html(names),
    }


def _snippet_view(
    abstract: str, highlight: tuple[tuple[int, int], ...], snippet_chars: int
) -> tuple[Markup, str]:
    snippet_html, snippet_text = build_snippet(abstract, highlight, limit=snippet_chars)
    return snippet_html, _wrap(snippet_text, indent="   ", hanging="   ")


def _reason_view(reason: str) -> dict[str, str]:
    line = one_line(reason, REASON_MAX)
    return {
        "reason": line,
        "reason_html": _in_html(line),
        "reason_text": _wrap(f"Why: {line}", indent="   ", hanging="        ") if line else "",
    }


def _wrap(text: str, *, indent: str = "", hanging: str = "") -> str:
    """Single-spaced text wrapped at TEXT_WIDTH for the plain part; long words stay whole.

    Like ``textwrap.fill(break_long_words=False, break_on_hyphens=False)``, without textwrap's
    general machinery: it runs on every paper of every digest.
    """
    lines: list[str] = []
    text = text.strip()
    prefix, pos, size = indent, 0, len(text)
    while pos < size:  # text[pos:] is what is left, with no space at either end
        room = TEXT_WIDTH - len(prefix)
        if size - pos <= room:
            lines.append(prefix + text[pos:])
            break
        cut = text.rfind(" ", pos, pos + room + 1)
        if cut < 0:  # one word longer than the line (a URL): keep it whole
            cut = text.find(" ", pos + room)
            if cut < 0:
                lines.append(prefix + text[pos:])
                break
        lines.append(prefix + text[pos:cut].rstrip(" "))
        prefix, pos = hanging, cut + 1
        while pos < size and text[pos] == " ":
            pos += 1
    return "\n".join(lines)


def _link(value: str, what: str) -> str:
    url = safe_url(value)
    if not url:
        raise TemplateError(f"the {what} link must be an http(s) URL, got {value[:80]!r}")
    return url


def _keywords(keywords: Iterable[str]) -> str:
    return one_line(", ".join(k for k in (one_line(k, 60) for k in keywords) if k), 600)


def make_premailer(css: str) -> Any:
    """A premailer set up for email: keeps @media (with !important) in <style>, loads nothing."""
    # imported here: a composing process gets its templates already inlined, and need not
    # load premailer, lxml and cssutils
    from premailer import Premailer

    return Premailer(
        css_text=[css],
        strip_important=False,  # else the kept @media rules can never beat the inlined styles
        remove_classes=False,  # the @media rules select by class
        keep_style_tags=False,
        allow_network=False,
        allow_loading_external_files=False,
        disable_validation=True,
        disable_link_rewrites=True,
        cssutils_logging_level=logging.CRITICAL,
    )


def inline_template_source(source: str, css: str) -> str:
    """Inline ``css`` into a Jinja HTML template's source, keeping every Jinja tag intact.

    premailer on raw Jinja source keeps tags in text but URL-encodes ``{{ x }}`` inside
    href/src (libxml2 escapes URI attributes: ``{{%20x%20}}``), and the template no longer
    compiles; ``preserve_handlebar_syntax`` does not fix it. So every tag is swapped for an
    inert lowercase-alphanumeric token (which survives URI escaping and attribute-name
    lowercasing), premailer runs once, and the tags are put back. Comments are dropped, and
    the result is in ASCII (:func:`char_refs`), as the values rendered into it will be.
    """
    source = _JINJA_COMMENT.sub("", source).strip()
    prefix = next(p for p in (f"jinjatag{n}q" for n in range(1000)) if p not in source)
    token = re.compile(re.escape(prefix) + r"(\d+)x")
    tags: list[str] = []

    def swap(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        return f"{prefix}{len(tags) - 1}x"

    inert = _JINJA_TAG.sub(swap, source)
    for opener in ("{{", "{%", "{#"):
        if opener in inert:
            raise TemplateError(f"unbalanced Jinja tag near {inert[inert.index(opener) :][:60]!r}")
    inlined = str(make_premailer(css).transform(inert))
    seen: list[int] = []

    def restore(match: re.Match[str]) -> str:
        index = int(match.group(1))
        seen.append(index)
        return tags[index]

    restored = token.sub(restore, char_refs(inlined))
    if seen != list(range(len(tags))):
        lost = sorted(set(range(len(tags))) - set(seen))
        where = tags[lost[0]] if lost else "(reordered)"
        raise TemplateError(
            f"the CSS inliner moved or dropped a Jinja tag: {where!r}; keep tags out of tag "
            "interiors (a whole attribute) and out of <style>"
        )
    return restored


@dataclasses.dataclass(frozen=True, slots=True)
class RendererSource:
    """What a renderer is made of, once the CSS is inlined: enough for another process to
    make the same renderer without inlining again."""

    root: Path
    inlined: dict[str, str]
    css: str
    snippet_chars: int


class Renderer:
    """Renders digests and confirmation mails from templates whose CSS is inlined once."""

    def __init__(self, loader: jinja2.BaseLoader, *, snippet_chars: int = SNIPPET_CHARS) -> None:
        self._loader = loader
        self._snippet_chars = snippet_chars
        self.html_budget = HTML_BUDGET
        # What `create` made it from, for another process to make the same one.
        self.source: RendererSource | None = None
        # Snippets (many, most used once or a few times) apart from the papers' and
        # reasons' parts (few, used all the time), so clearing the one keeps the other.
        self._snippets: dict[tuple[Any, ...], Any] = {}
        self._parts: dict[tuple[Any, ...], Any] = {}
        # Loaded here, so that a broken template fails at start-up and not at a send.
        html, text = make_environment(loader, html=True), make_environment(loader, html=False)
        self._templates = {
            name: _load(html if name.endswith(".html.j2") else text, name) for name in TEMPLATES
        }

    @classmethod
    def create(
        cls, templates: Path | None = None, *, snippet_chars: int = SNIPPET_CHARS
    ) -> Renderer:
        """Load the templates (default: the shipped ones), inline the CSS once, compile."""
        root = Path(templates) if templates is not None else templates_dir()
        try:
            css = (root / CSS_FILE).read_text(encoding="utf-8")
            inlined = {
                name: inline_template_source((root / name).read_text(encoding="utf-8"), css)
                for name in INLINED_TEMPLATES
            }
        except OSError as e:
            raise TemplateError(f"cannot read the email templates in {root}: {e}") from e
        return cls.from_source(RendererSource(root, inlined, css, snippet_chars))

    @classmethod
    def from_source(cls, source: RendererSource) -> Renderer:
        """The renderer ``create`` made from ``source``, compiled again (no CSS inlining)."""
        files = jinja2.FileSystemLoader(str(source.root))
        loader = jinja2.ChoiceLoader([jinja2.DictLoader(source.inlined), files])
        renderer = cls(loader, snippet_chars=source.snippet_chars)
        renderer.source = source
        return renderer

    def _render(self, name: str, values: Mapping[str, Any]) -> str:
        try:
            return self._templates[name].render(values)
        except jinja2.TemplateError as e:
            raise TemplateError(f"template {name}: {e}") from e

    def _html(self, name: str, values: Mapping[str, Any]) -> str:
        # In ASCII (char_refs), so that the mail can carry it as it is. The templates are in
        # ASCII from the start and snippets once made: most digests are ASCII already.
        return char_refs(self._render(name, values))

    def template_source(self, name: str = DIGEST_HTML) -> str:
        """The compiled source of a template, after inlining (for inspection and tests)."""
        return self._loader.get_source(self._templates[name].environment, name)[0]

    def _item_view(self, item: DigestItem, snippet_chars: int | None = None) -> _ItemView:
        # A paper goes to many readers of an edition, often with the same matched keywords:
        # the parts of its view are kept, each under what it depends on: the paper's title,
        # link and authors; the snippet (most of a digest's cost: cutting, marking, escaping,
        # wrapping) under the marks it can show; the text of a reason (which many papers
        # share). Each is a pure function of its key, so the caches change nothing but the
        # time. The view itself is made anew: keyed on the marks and the reason too, few views
        # would be found again, and kept views would keep their snippets alive after the
        # snippets' memo let them go.
        if len(self._parts) >= MEMO_SIZE:
            self._parts.clear()
        if len(self._snippets) >= SNIPPET_MEMO_SIZE:
            self._snippets.clear()
        if snippet_chars is None:
            highlight = snippet_reach(item.abstract, item.highlight, self._snippet_chars)
            snippet_html, snippet_text = self._part(
                self._snippets,
                (item.abstract, highlight),
                _snippet_view,
                item.abstract,
                highlight,
                self._snippet_chars,
            )
        elif snippet_chars > 0:  # a digest over the budget (rare): not kept
            highlight = snippet_reach(item.abstract, item.highlight, snippet_chars)
            snippet_html, snippet_text = _snippet_view(item.abstract, highlight, snippet_chars)
        else:
            snippet_html, snippet_text = Markup(""), ""
        upvotes = item.upvotes
        return _ItemView(
            **self._part(
                self._parts,
                ("paper", item.title, item.url, item.authors),
                _paper_view,
                item.title,
                item.url,
                item.authors,
            ),
            snippet_html=snippet_html,
            snippet_text=snippet_text,
            **self._part(self._parts, ("reason", item.reason), _reason_view, item.reason),
            upvotes=upvotes if isinstance(upvotes, int) and upvotes >= 0 else None,
        )

    @staticmethod
    def _part(
        memo: dict[tuple[Any, ...], Any], key: tuple[Any, ...], make: Callable[..., Any], *args: Any
    ) -> Any:
        value = memo.get(key)
        if value is None:
            value = memo[key] = make(*args)
        return value

    def digest_values(self, ctx: DigestContext) -> dict[str, Any]:
        """The template variables for a digest (shared by the HTML and text templates)."""
        items = [self._item_view(item) for item in ctx.items]
        subject = digest_subject(ctx)
        if items:
            titles = " · ".join(item.title for item in items[:3])
            count = f"{len(items)} new paper{'s' if len(items) != 1 else ''}"
            preheader = one_line(f"{count} for you: {titles}", 140)
        else:
            preheader = one_line(ctx.empty_note or EMPTY_NOTE, 140)
        site = one_line(ctx.site_name, 80)
        recipient = one_line(ctx.recipient, 254)
        keywords = _keywords(ctx.keywords[:KEYWORDS_SHOWN])
        # The HTML part gets its values in ASCII where it can (see _html): the subject and
        # titles often end in "…", and "·" joins the titles of the preheader.
        return {
            "subject": subject,
            "subject_html": _in_html(subject),
            "preheader": _in_html(preheader),
            "site_name": site,
            "base_url": _link(ctx.base_url, "site"),
            "recipient": recipient,
            "edition_label": one_line(ctx.edition_label or ctx.edition, 80),
            "items": items,
            "count": len(items),
            "keywords": keywords,
            "footer_text": _wrap(
                f"You get this mail because {recipient} subscribed to {site}"
                + (f" with the keywords: {keywords}." if keywords else ".")
            ),
            "unsubscribe_url": _link(ctx.unsubscribe_url, "unsubscribe"),
            "preferences_url": _link(ctx.preferences_url, "preferences"),
            "view_url": _link(ctx.view_url, "view-in-browser") if ctx.view_url else None,
            "empty_note": one_line(ctx.empty_note or EMPTY_NOTE, 500),
            "more": 0,  # papers left out of the HTML for its size (see _fitted_html)
        }

    def render_digest(self, ctx: DigestContext) -> Rendered:
        """A subscriber's digest: subject, HTML (styles already inlined, within the HTML
        budget) and plain text (every paper, whole)."""
        values = self.digest_values(ctx)
        html = self._html(DIGEST_HTML, values)
        if len(html) > self.html_budget:
            html = self._fitted_html(ctx, values)
        return Rendered(
            subject=values["subject"], html=html, text=self._render(DIGEST_TEXT, values)
        )

    def _fitted_html(self, ctx: DigestContext, values: dict[str, Any]) -> str:
        """The HTML of a digest too long for the budget: shorter snippets past the first
        papers, then as many papers as fit, with a link to the rest in the browser."""
        shown: list[_ItemView] = list(values["items"])
        for limit in SHORTER_SNIPPETS:
            shown[FULL_SNIPPETS:] = [
                self._item_view(item, snippet_chars=limit) for item in ctx.items[FULL_SNIPPETS:]
            ]
            html = self._html(DIGEST_HTML, {**values, "items": shown})
            if len(html) <= self.html_budget:
                return html

        def fewer(n: int) -> str:
            more = len(shown) - n
            return self._html(DIGEST_HTML, {**values, "items": shown[:n], "more": more})

        fits, too_many = 0, len(shown)  # the most papers that fit: between the two
        while too_many - fits > 1:
            middle = (fits + too_many) // 2
            if len(fewer(middle)) <= self.html_budget:
                fits = middle
            else:
                too_many = middle
        return fewer(fits)

    def confirm_values(self, ctx: ConfirmContext) -> dict[str, Any]:
        """The template variables for a confirmation mail."""
        site = one_line(ctx.site_name, 80)
        return {
            "subject": one_line(f"Confirm your subscription to {site}", SUBJECT_MAX),
            "preheader": one_line(f"One click to start receiving {site} digests.", 140),
            "site_name": site,
            "base_url": _link(ctx.base_url, "site"),
            "recipient": one_line(ctx.recipient, 254),
            "confirm_url": _link(ctx.confirm_url, "confirmation"),
            "keywords": _keywords(ctx.keywords[:KEYWORDS_SHOWN]),
            "expires_note": one_line(ctx.expires_note, 200) if ctx.expires_note else None,
        }

    def render_confirm(self, ctx: ConfirmContext) -> Rendered:
        """The confirm-your-subscription mail with its one link."""
        values = self.confirm_values(ctx)
        return Rendered(
            subject=values["subject"],
            html=self._html(CONFIRM_HTML, values),
            text=self._render(CONFIRM_TEXT, values),
        )


def _load(env: jinja2.Environment, name: str) -> jinja2.Template:
    try:
        return env.get_template(name)
    except jinja2.TemplateError as e:
        raise TemplateError(f"template {name}: {e}") from e


def make_environment(loader: jinja2.BaseLoader, *, html: bool) -> jinja2.Environment:
    """A Jinja environment for the email templates, strict about undefined values; for HTML,
    every ``{{ value }}`` is escaped as Jinja's autoescape escapes it (:func:`escape_html`)."""
    env = jinja2.Environment(
        loader=loader,
        # finalize runs on every {{ value }}: escaping there gives autoescape's output (the
        # tests compare the two) without the new Markup autoescape makes of each value. What
        # else autoescape changes (Markup-aware filters, ~, macros) the templates do not use;
        # with it off, those would escape twice, never leave a value unescaped.
        autoescape=False,
        finalize=escape_html if html else None,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    # Template.render copies the globals into every context, and the email templates use
    # none of Jinja's default ones (range, lipsum, cycler, ...).
    env.globals.clear()
    return env


def escape_html(value: object) -> str:
    """``markupsafe.escape(value)``, the same characters, as a plain ``str`` for a ``str``:
    ``& < > ' "`` replaced; markup (a ``Markup``, anything with ``__html__``) taken as it is."""
    if type(value) is str:
        if "&" in value or "<" in value or ">" in value or "'" in value or '"' in value:
            return (
                value.replace("&", "&amp;")
                .replace(">", "&gt;")
                .replace("<", "&lt;")
                .replace("'", "&#39;")
                .replace('"', "&#34;")
            )
        return value
    if type(value) is Markup:
        return value  # escaped already: the snippets, the preheader
    if type(value) is int:
        return str(value)  # digits (the upvotes) need no escaping
    return escape(value)
