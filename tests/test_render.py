"""Rendering: inline-once CSS, escaping, highlights, bounds, the empty and confirm variants."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
import random
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import jinja2
import lxml.html
import pytest
from markupsafe import Markup
from reference import ReferenceRenderer, autoescape_environment

from digest.errors import TemplateError
from digest.mailer import build_message
from digest.render import (
    CONFIRM_HTML,
    DIGEST_HTML,
    HTML_BUDGET,
    INLINED_TEMPLATES,
    ConfirmContext,
    DigestContext,
    DigestItem,
    Rendered,
    Renderer,
    _ItemView,
    build_snippet,
    char_refs,
    escape_html,
    inline_template_source,
    safe_url,
    snippet_reach,
)

GOLDEN = Path(__file__).parent / "data" / "golden"
UPDATE_GOLDEN = os.environ.get("DIGEST_UPDATE_GOLDEN") == "1"
ABSTRACT = (
    "We present a diffusion model for protein structure generation that conditions on "
    "sequence motifs. Our method, MotifDiff, outperforms prior work on designability and "
    "novelty, and scales to complexes of up to 1,000 residues. We release code & weights."
)


def _item(n: int, **changes: object) -> DigestItem:
    base = DigestItem(
        key=f"arxiv:2611.{n:05d}",
        title=f"MotifDiff {n}: Diffusion for Protein Design",
        url=f"https://arxiv.org/abs/2611.{n:05d}?ref=digest&n={n}",
        authors=("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"),
        abstract=ABSTRACT,
        upvotes=n * 3,
        score=1.0 / (n + 1),
        reason="matches “diffusion”, “protein”",
        highlight=((13, 22), (33, 40)),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _ctx(items: tuple[DigestItem, ...] | None = None, **changes: object) -> DigestContext:
    base = DigestContext(
        site_name="digest",
        base_url="https://digest.example.org",
        recipient="reader@example.com",
        edition="2026-11-22",
        edition_label="Sunday 22 November 2026",
        items=tuple(_item(n) for n in range(1, 11)) if items is None else items,
        keywords=("diffusion", "protein"),
        unsubscribe_url="https://digest.example.org/u/abc.def?one=1&two=2",
        preferences_url="https://digest.example.org/p/abc.def",
        view_url="https://digest.example.org/v/2026-11-22/abc",
        empty_note=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer.create()


def _doc(html: str) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(html)


def _normalised(html: str) -> str:
    """Parse and re-serialise (entity spellings, attribute quoting), then collapse whitespace."""
    out = lxml.html.tostring(_doc(html), encoding="unicode", method="html")
    return re.sub(r"\s+", " ", re.sub(r">\s+<", "><", out)).strip()


def test_styles_are_inlined_on_content_elements(renderer: Renderer) -> None:
    doc = _doc(renderer.render_digest(_ctx()).html)
    titles = doc.cssselect("a.paper-title")
    assert len(titles) == 10
    for a in titles:
        assert "color:#0b57d0" in a.get("style").replace(" ", "")
        assert "font-weight:bold" in a.get("style").replace(" ", "")
    for td in doc.cssselect("td.paper"):
        assert "padding:18px 24px" in td.get("style")
        assert "font-family" in td.get("style")
    assert "max-width:600px" in doc.cssselect("div.wrapper")[0].get("style")
    assert doc.cssselect("table.container")[0].get("width") == "100%"
    assert doc.cssselect("table.container")[0].get("bgcolor") == "#ffffff"
    # the enhancements stay in <head>, with their !important intact
    style = doc.cssselect("head style")[0].text
    assert "@media screen and (max-width: 620px)" in style
    assert "prefers-color-scheme: dark" in style
    assert "!important" in style
    metas = {m.get("name"): m.get("content") for m in doc.cssselect("meta[name]")}
    assert metas["color-scheme"] == "light dark"
    assert metas["supported-color-schemes"] == "light dark"


def test_no_layout_features_outlook_drops(renderer: Renderer) -> None:
    html = renderer.render_digest(_ctx()).html
    assert "display:flex" not in html.replace(" ", "")
    assert "display:grid" not in html.replace(" ", "")
    assert "border-radius" not in html
    assert "<!--[if mso]>" in html


def test_compiled_template_keeps_jinja_tags_intact(renderer: Renderer) -> None:
    source = renderer.template_source()
    assert 'href="{{ item.url }}"' in source
    assert "%7B%7B" not in source and "{{%20" not in source
    assert "jinjatag" not in source
    assert "{% for item in items %}" in source
    # inlined at load time: the compiled source already carries the styles
    assert re.search(r'<td class="paper" style=[^>]*padding:18px 24px', source)


@pytest.mark.parametrize(
    "ctx",
    [
        _ctx(),
        _ctx(view_url=None),
        _ctx(items=(), empty_note="Nothing new & quiet today <3"),
        _ctx(
            items=(
                _item(
                    1,
                    title="Ünïcödé 量子 <b>bold</b> & \"quotes\" 'too' 🧬",
                    authors=("Zoë", "李雷"),
                    upvotes=None,
                    reason="",
                    url="javascript:alert(1)",
                ),
            ),
            keywords=("量子", "<i>x</i>"),
        ),
    ],
)
def test_inline_once_equals_per_message_premailer(renderer: Renderer, ctx: DigestContext) -> None:
    fast = renderer.render_digest(ctx)
    slow = ReferenceRenderer(renderer).render_digest(ctx)
    assert _normalised(fast.html) == _normalised(slow.html)
    assert fast.text == slow.text
    assert fast.subject == slow.subject


def test_html_is_ascii_with_character_references_and_goes_as_it_is(renderer: Renderer) -> None:
    title = "Ünïcödé 量子 “quoted” — 🧬 <b>x</b>"
    ctx = _ctx(
        items=(
            _item(1, title=title, authors=("Zoë", "李雷"), abstract="Résumé … " + ABSTRACT),
            _item(2),
        ),
        site_name="dïgest",
        keywords=("量子", "diffusion"),
    )
    out = renderer.render_digest(ctx)
    assert out.html.isascii()
    doc = _doc(out.html)
    assert doc.cssselect("a.paper-title")[0].text_content() == title
    assert doc.cssselect("p.authors")[0].text_content() == "Zoë, 李雷"
    assert doc.cssselect("p.snippet")[0].text_content().startswith("Résumé … We present")
    assert "“diffusion”" in doc.cssselect("p.why")[0].text_content()
    assert "dïgest" in doc.cssselect("p.site-name")[0].text_content()
    assert title in out.text and "Zoë, 李雷" in out.text  # the text part keeps the characters
    assert _mailed_html(out) == ("7bit", out.html)


def test_html_with_lines_too_long_to_go_as_they_are_is_encoded(renderer: Renderer) -> None:
    # 300 CJK characters are 2,400 octets of character references on one line: over 998.
    out = renderer.render_digest(_ctx(items=(_item(1, title="量子" * 150),)))
    assert out.html.isascii()
    assert _mailed_html(out) == ("quoted-printable", out.html)


def test_a_digest_of_ascii_papers_goes_as_it_is_in_both_parts(renderer: Renderer) -> None:
    # as the ranker explains a match (ASCII quotes), with abstracts long enough to be cut
    papers = tuple(
        _item(n, abstract=ABSTRACT * 6, reason='matched "diffusion" in the title') for n in (1, 2)
    )
    out = renderer.render_digest(_ctx(items=papers))
    assert "...\n" in out.text and out.text.isascii()
    assert "&#8230;</p>" in out.html.replace("\n", "")
    assert _mailed_html(out, "plain") == ("7bit", out.text)
    assert _mailed_html(out) == ("7bit", out.html)


def _mailed_html(out: Rendered, kind: str = "html") -> tuple[str, str]:
    """A part of ``out`` as mailed (the HTML by default): its transfer encoding and its text
    parsed back."""
    data = build_message(
        from_addr="digest@example.org",
        from_name="dïgest",
        to_addr="reader@example.com",
        subject=out.subject,
        text=out.text,
        html=out.html,
        message_id="<digest.1@example.org>",
        date=datetime(2026, 11, 22, 7, 0, tzinfo=UTC),
        list_id="digest.example.org",
        unsubscribe_url="https://digest.example.org/u/abc.def",
        unsubscribe_mailto="unsubscribe@example.org",
    )
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage) and not msg.defects
    part = msg.get_body(preferencelist=(kind,))
    assert part is not None
    return str(part["Content-Transfer-Encoding"]), part.get_content().replace("\r\n", "\n")


def test_char_refs_leave_style_script_and_comments_alone() -> None:
    html = (
        '<html><head><style>p::before { content: "→" }</style></head><body>'
        "<!-- café --><p title='é'>naïve 🧬 &amp; x</p><script>var s = \"ü\";</script>"
        '<STYLE>\nq { quotes: "«" "»" }</style ></body></html>'
    )
    out = char_refs(html)
    assert out == (
        '<html><head><style>p::before { content: "→" }</style></head><body>'
        "<!-- café --><p title='&#233;'>na&#239;ve &#129516; &amp; x</p>"
        '<script>var s = "ü";</script><STYLE>\nq { quotes: "«" "»" }</style ></body></html>'
    )
    assert lxml.html.tostring(_doc(out), encoding="unicode") == lxml.html.tostring(
        _doc(html), encoding="unicode"
    )
    assert char_refs("plain") == "plain"


def test_confirm_inline_once_equals_per_message_premailer(renderer: Renderer) -> None:
    ctx = ConfirmContext(
        site_name="digest",
        base_url="https://digest.example.org",
        recipient="new@example.com",
        confirm_url="https://digest.example.org/c/tok.sig?a=1&b=2",
        keywords=("graph neural networks",),
        expires_note="The link works for 48 hours.",
    )
    fast, slow = renderer.render_confirm(ctx), ReferenceRenderer(renderer).render_confirm(ctx)
    assert _normalised(fast.html) == _normalised(slow.html)
    assert fast.text == slow.text


def test_feed_markup_is_escaped_everywhere(renderer: Renderer) -> None:
    evil = "<script>alert('x')</script>"
    item = _item(
        1,
        title=f"Title {evil}",
        abstract=f"Abstract {evil} diffusion & more",
        authors=(f"Mallory {evil}",),
        reason=f"because {evil}",
        highlight=((9, 17),),
    )
    out = renderer.render_digest(_ctx(items=(item,), keywords=(evil,)))
    assert "<script>" not in out.html
    assert out.html.count("&lt;script&gt;") >= 5  # title, authors, snippet, reason, keywords
    doc = _doc(out.html)
    assert not doc.cssselect("body script")
    assert doc.cssselect("a.paper-title")[0].text_content() == f"Title {evil}"
    # the mark sits inside the escaped text, around the escaped tag, not inside an entity
    mark = doc.cssselect("mark")[0]
    assert mark.text == "<script>"
    # plain text carries the text as is: nothing is escaped, nothing is lost
    assert f"1. Title {evil}" in out.text
    assert f"Mallory {evil}" in out.text
    assert f"Why: because {evil}" in out.text
    assert "&lt;" not in out.text and "&amp;" not in out.text


def test_escape_html_escapes_as_markupsafe_does() -> None:
    from markupsafe import escape

    rng = random.Random(3)
    alphabet = "ab &<>'\"\u00e9\u2028\x00;#"
    for _ in range(5_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert escape_html(text) == escape(text)
        assert type(escape_html(text)) is str

    # the other values the templates meet give the characters markupsafe's escape gives
    class Html:
        def __html__(self) -> str:
            return "<i>&amp;</i>"

    class Marked(Markup):
        pass

    for value in (
        Markup("<b>x</b> &amp; &#39;"),
        Marked("<u>y</u>"),
        Html(),
        3,
        -12,
        0,
        10**30,
        True,
        None,
        2.5,
        ("<a>",),
    ):
        assert str(escape_html(value)) == str(escape(value)), value
    shared = Markup("<b>kept</b>")
    assert escape_html(shared) is shared  # no copy made


_HOSTILE = [
    "a",
    "Bc",
    " ",
    "  ",
    "&",
    "&amp;",
    "<",
    ">",
    "'",
    '"',
    "\u00e9",
    "\u91cf",
    "\U0001f9ec",
    "\u2028",
    "\x00",
    "\n",
    ";",
    "#",
    "{{ x }}",
    "diffusion",
    "<script>",
]


def _hostile(rng: random.Random, most: int) -> str:
    return "".join(rng.choice(_HOSTILE) for _ in range(rng.randint(0, most)))


def _random_digest(rng: random.Random) -> DigestContext:
    items = []
    for n in range(rng.randint(0, 5)):
        abstract = _hostile(rng, 120)
        starts = [rng.randint(0, len(abstract)) for _ in range(rng.randint(0, 4))]
        items.append(
            _item(
                n,
                title=_hostile(rng, 30),
                url=rng.choice(["https://x.org/?a=1&b='2'<", _hostile(rng, 5), "javascript:x"]),
                authors=tuple(_hostile(rng, 6) for _ in range(rng.randint(0, 5))),
                abstract=abstract,
                upvotes=rng.choice([None, 0, 1, 7, -3]),
                reason=_hostile(rng, 20),
                highlight=tuple(sorted((s, s + rng.randint(0, 9)) for s in starts)),
            )
        )
    return _ctx(
        items=tuple(items),
        site_name=_hostile(rng, 10),
        recipient=_hostile(rng, 10),
        edition=rng.choice(["2026-11-22", "2026-W47", _hostile(rng, 6)]),
        edition_label=_hostile(rng, 10),
        keywords=tuple(_hostile(rng, 6) for _ in range(rng.randint(0, 4))),
        view_url=rng.choice([None, "https://d.example.org/v?a=1&b=<2>"]),
        empty_note=rng.choice([None, _hostile(rng, 20)]),
    )


def test_templates_render_as_with_jinjas_autoescape(renderer: Renderer) -> None:
    # The renderer escapes in Jinja's finalize, not with autoescape: the same templates
    # (inlined) through Jinja's own autoescape give the same bytes, on hostile random values.
    stock = autoescape_environment(
        jinja2.DictLoader({name: renderer.template_source(name) for name in INLINED_TEMPLATES})
    )
    rng = random.Random(5)
    for _ in range(300):
        ctx = _random_digest(rng)
        expected = char_refs(stock.get_template(DIGEST_HTML).render(renderer.digest_values(ctx)))
        assert renderer.render_digest(ctx).html == expected
        confirm = ConfirmContext(
            site_name=_hostile(rng, 10),
            base_url="https://d.example.org/?a=<1>&b='2'",
            recipient=_hostile(rng, 10),
            confirm_url="https://d.example.org/c?a=1&b=2",
            keywords=tuple(_hostile(rng, 6) for _ in range(rng.randint(0, 3))),
            expires_note=rng.choice([None, _hostile(rng, 20)]),
        )
        values = renderer.confirm_values(confirm)
        expected = char_refs(stock.get_template(CONFIRM_HTML).render(values))
        assert renderer.render_confirm(confirm).html == expected
    evil = '<b>"it\'s"</b> & co'
    html = renderer.render_digest(_ctx(items=(_item(1, title=evil),), keywords=(evil,))).html
    assert "&lt;b&gt;&#34;it&#39;s&#34;&lt;/b&gt; &amp; co" in html


def test_unsafe_paper_url_is_not_linked(renderer: Renderer) -> None:
    out = renderer.render_digest(_ctx(items=(_item(1, url="javascript:alert(1)"),)))
    assert "javascript:" not in out.html
    assert not _doc(out.html).cssselect("a.paper-title")
    assert _doc(out.html).cssselect("span.paper-title-plain")


def test_highlights_mark_the_right_words_with_inline_style(renderer: Renderer) -> None:
    out = renderer.render_digest(_ctx(items=(_item(1),)))
    marks = _doc(out.html).cssselect("p.snippet mark")
    assert [m.text for m in marks] == ["diffusion", "protein"]
    for m in marks:
        assert "background-color:#fff1a8" in m.get("style")
    assert "We present a *diffusion* model for *protein* structure" in re.sub(r"\s+", " ", out.text)


def test_snippet_is_built_from_the_original_text() -> None:
    text = "a < b & c > d 'e' \"f\""
    html, plain = build_snippet(text, ((2, 3), (6, 7), (0, 100)))  # overlapping, clipped
    assert isinstance(html, Markup)
    assert str(html) == (
        '<mark class="hl"\nstyle="background-color:#fff1a8;color:#1f2328;padding:0 1px;">'
        "a &lt; b &amp; c &gt; d &#39;e&#39; &#34;f&#34;</mark>"
    )
    assert plain == f"*{text}*"
    html, plain = build_snippet("x & y", ((4, 5), (-3, 1), (3, 2), (9, 12)))
    assert str(html).startswith("<mark") and str(html).endswith("y</mark>")
    assert plain == "*x* & *y*"


def test_huge_abstract_gives_a_bounded_snippet(renderer: Renderer) -> None:
    huge = ("protein " * 131072)[: 1 << 20]
    spans = tuple((i, i + 7) for i in range(0, 1 << 20, 8))
    item = _item(1, abstract=huge, highlight=spans)
    html, plain = build_snippet(huge, spans, limit=420)
    assert len(plain.replace("*", "")) <= 423  # the limit, plus the ellipsis
    assert plain.endswith("...")
    assert not plain.endswith(" ...")
    out = renderer.render_digest(_ctx(items=(item,)))
    assert len(out.html) < 40_000
    assert len(out.text) < 5_000
    # cut at a word boundary: never in the middle of "protein"
    assert re.search(r"protein</mark>&#8230;", str(html))


def test_subject_is_one_bounded_line(renderer: Renderer) -> None:
    out = renderer.render_digest(_ctx())
    assert out.subject == (
        "Your digest for 22 Nov 2026: MotifDiff 1: Diffusion for Protein Design (+9 more)"
    )
    nasty = _item(1, title="Hi\r\nBcc: evil@example.com\x00\x1b[31m\u2028" + "long " * 200)
    subject = renderer.render_digest(_ctx(items=(nasty, _item(2)))).subject
    assert len(subject) <= 150
    assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029]", subject)
    spoof = renderer.render_digest(_ctx(items=(_item(1, title="Invoice \u202egnp.exe"),)))
    assert "\u202e" not in spoof.subject and "\u202e" not in spoof.html
    assert subject.startswith("Your digest for 22 Nov 2026: Hi Bcc: evil@example.com")
    assert subject.endswith("… (+1 more)")
    one = renderer.render_digest(_ctx(items=(_item(1),))).subject
    assert "more)" not in one


def test_weekly_edition_uses_the_label(renderer: Renderer) -> None:
    out = renderer.render_digest(_ctx(edition="2026-W47", edition_label="Week 47, 2026"))
    assert out.subject.startswith("Your digest for Week 47, 2026: ")


def test_empty_note_variant(renderer: Renderer) -> None:
    out = renderer.render_digest(_ctx(items=(), empty_note="Quiet day: nothing matched."))
    doc = _doc(out.html)
    assert not doc.cssselect("td.paper")
    assert doc.cssselect("td.empty")[0].text_content().strip() == "Quiet day: nothing matched."
    assert "Quiet day: nothing matched." in out.text
    assert out.subject == "Your digest for 22 Nov 2026: no new papers"
    default = renderer.render_digest(_ctx(items=()))
    assert "No new papers matched your keywords" in default.text


def test_footer_links_and_reasons(renderer: Renderer) -> None:
    ctx = _ctx()
    out = renderer.render_digest(ctx)
    doc = _doc(out.html)
    hrefs = [a.get("href") for a in doc.cssselect("td.footer a")]
    assert hrefs == [ctx.unsubscribe_url, ctx.preferences_url, ctx.view_url]
    footer = doc.cssselect("td.footer")[0].text_content()
    assert "reader@example.com" in footer and "diffusion, protein" in footer
    assert doc.cssselect("p.view-link a")[0].get("href") == ctx.view_url
    assert (
        doc.cssselect("p.authors")[0].text_content()
        == "Ada Lovelace, Alan Turing, Grace Hopper et al."
    )
    assert doc.cssselect("p.meta")[0].text_content() == "▲ 3 upvotes"
    preheader = doc.cssselect("div.preheader")[0]
    assert "display:none" in preheader.get("style")
    assert preheader.text_content().startswith("10 new papers for you: MotifDiff 1")
    for line in (
        f"Unsubscribe: {ctx.unsubscribe_url}",
        f"Preferences: {ctx.preferences_url}",
        f"View in your browser: {ctx.view_url}",
        "   Why: matches “diffusion”, “protein”",
        "   Upvotes: 3",
        f"   {_item(1).url}",
    ):
        assert line in out.text.splitlines()
    no_view = renderer.render_digest(_ctx(view_url=None))
    assert "View in" not in no_view.text
    assert not _doc(no_view.html).cssselect("p.view-link")


def test_text_part_matches_golden(renderer: Renderer) -> None:
    items = (
        _item(1),
        _item(2, upvotes=None, authors=("Solo Author",), title="A\tTitle\nacross lines"),
    )
    text = renderer.render_digest(_ctx(items=items)).text
    path = GOLDEN / "digest.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
    assert max(len(line) for line in text.splitlines()) <= 80


def test_confirm_mail(renderer: Renderer) -> None:
    ctx = ConfirmContext(
        site_name="digest",
        base_url="https://digest.example.org",
        recipient="new@example.com",
        confirm_url="https://digest.example.org/c/tok.sig?a=1&b=2",
        keywords=("graph <neural> networks",),
    )
    out = renderer.render_confirm(ctx)
    assert out.subject == "Confirm your subscription to digest"
    doc = _doc(out.html)
    button = doc.cssselect("a.button")[0]
    assert button.get("href") == ctx.confirm_url
    assert "color:#fff" in button.get("style").replace(" ", "")
    assert doc.cssselect("td.button-cell")[0].get("bgcolor") == "#0b57d0"
    # What the request typed is never in the mail: anyone may ask for any address.
    assert "neural" not in out.html and "neural" not in out.text
    assert ctx.confirm_url in out.text.splitlines()
    assert "new@example.com" in out.text


def test_bad_internal_link_is_a_template_error(renderer: Renderer) -> None:
    with pytest.raises(TemplateError, match="unsubscribe"):
        renderer.render_digest(_ctx(unsubscribe_url="javascript:void(0)"))


def test_inliner_refuses_an_unbalanced_tag() -> None:
    with pytest.raises(TemplateError, match="unbalanced"):
        inline_template_source("<html><body><p>{{ oops</p></body></html>", "p { color: red; }")


def test_inliner_keeps_tags_in_attributes_and_tables() -> None:
    source = (
        "<!DOCTYPE html><html><head></head><body><table>{% for x in xs %}"
        '<tr><td><a href="{{ x.url }}?a={{ x.id }}&amp;b=1">{{ x.name }}</a></td></tr>'
        "{% endfor %}</table></body></html>"
    )
    out = inline_template_source(source, "a { color: #123456; }")
    assert 'href="{{ x.url }}?a={{ x.id }}&amp;b=1"' in out
    assert out.index("{% for x in xs %}") < out.index("<tr>") < out.index("{% endfor %}")
    assert 'style="color:#123456"' in out


def test_missing_templates_are_a_template_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="cannot read"):
        Renderer.create(tmp_path)


def test_snippet_starts_at_the_sentence_of_a_late_match() -> None:
    from digest.render import build_snippet

    abstract = (
        "A long and unrelated opening sentence. " * 30
        + "Here we study quantization of weights. " * 3
    )
    at = abstract.index("quantization")
    html, text = build_snippet(abstract, [(at, at + len("quantization"))], limit=200)
    assert text.startswith("...Here we study *quantization*")
    assert "<mark" in html and len(text) <= 205
    # An early match keeps the snippet at the start of the abstract.
    early = "We study quantization. " + "Filler words go on. " * 40
    _, text = build_snippet(early, [(9, 21)], limit=200)
    assert text.startswith("We study *quantization*.")


def test_a_snippet_is_the_same_with_only_the_spans_within_its_reach() -> None:
    rng = random.Random(7)
    pieces = [*"abc de fg hi", ". ", "&", "<", "'", "\u00e9", "\n", "  ", "\t", "\x00", "     "]
    reached_less = 0
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 160)))
        spans = []
        for _ in range(rng.randint(0, 8)):
            s = rng.randint(0, len(text))
            spans.append((s, rng.randint(s, min(len(text), s + 9))))
        rng.shuffle(spans)
        limit = rng.choice([10, 20, 40, 60])
        reach = snippet_reach(text, spans, limit)
        assert build_snippet(text, reach, limit=limit) == build_snippet(text, spans, limit=limit)
        assert list(reach) == sorted(spans)[: len(reach)]
        reached_less += len(reach) < len(spans)
    assert reached_less > 2_000  # the far spans were really left out, and changed nothing


def test_readers_whose_matches_differ_only_far_down_share_one_snippet() -> None:
    renderer = Renderer.create()
    abstract = "We study quantization of weights. " + "Filler words go on here. " * 40
    far = abstract.index("here", 600)  # past the first match + SNIPPET_CHARS

    def snippet(*highlight: tuple[int, int]) -> _ItemView:
        ctx = _ctx(items=(_item(1, abstract=abstract, highlight=highlight),))
        view: _ItemView = renderer.digest_values(ctx)["items"][0]
        return view

    near, also_far = snippet((9, 21)), snippet((9, 21), (far, far + 4))
    assert near.snippet_html is also_far.snippet_html  # made once, for both readers
    assert near.snippet_text.startswith("   We study *quantization*")
    # a second span within reach is a different snippet
    assert "*weights*" in snippet((9, 21), (25, 32)).snippet_text


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://arxiv.org/abs/2411.01234", True),
        ("HTTP://example.org/a?b=c#d", True),
        ("http://user@host:8080/p", True),
        ("http://[::1]/x", True),
        ("http://[::1/x", False),  # a bracket left open: urlsplit refuses it
        ("https://]/x", False),
        ("https://", False),
        ("https:///path", False),
        ("javascript:alert(1)", False),
        ("data:text/html,hi", False),
        ("ftp://example.org/f", False),
        ("https://exa mple.org", False),
        ("https://example.org/\tx", False),  # control characters
    ],
)
def test_safe_url_keeps_only_http_urls_with_a_host(url: str, kept: bool) -> None:
    assert safe_url(url) == (url if kept else "")


def _heavy(n: int) -> DigestItem:
    """A paper with a long title, many authors, a long abstract full of marked keywords."""
    words = [
        f"diffusion{i} protein{i} design{i} (benchmark: 98.{i}%) &amp; more" for i in range(60)
    ]
    abstract = " ".join(words)
    marks = tuple((m.start(), m.end()) for m in re.finditer(r"diffusion\d+|protein\d+", abstract))
    return _item(
        n,
        title=f"Paper {n}: " + "a very long title about protein diffusion " * 6,
        authors=tuple(f"Author Number{i} Longname" for i in range(30)),
        abstract=abstract,
        highlight=marks,
        reason="matches " + ", ".join(f"“keyword number {i}”" for i in range(18)),
    )


def test_a_long_digest_keeps_under_gmails_clip_with_shorter_snippets(renderer: Renderer) -> None:
    """50 heavy papers and 18 keywords: over the budget as they are; within it once the papers
    past the first few get shorter snippets; the footer (unsubscribe) is in, the text part
    whole."""
    keywords = tuple(f"keyword number {i}" for i in range(18))
    ctx = _ctx(tuple(_heavy(n) for n in range(1, 51)), keywords=keywords)
    naive = renderer._html(DIGEST_HTML, renderer.digest_values(ctx))
    assert len(naive) > HTML_BUDGET  # the case of the issue: it would be clipped
    out = renderer.render_digest(ctx)
    assert len(out.html) <= HTML_BUDGET
    assert "Unsubscribe</a>" in out.html[-3000:]
    assert out.html.count('class="paper-title"') == 50 and "more paper" not in out.html
    snippets = re.findall(r'<p class="snippet"[^>]*>(.*?)</p>', out.html, re.S)
    full = re.findall(r'<p class="snippet"[^>]*>(.*?)</p>', naive, re.S)
    later = snippets[3:]  # shorter, or none at all
    assert snippets[:3] == full[:3] and len(later) in (0, 47)
    assert all(len(a) < len(b) for a, b in zip(later, full[3 : 3 + len(later)], strict=True))
    assert all(f"\n{n}. Paper {n}:" in out.text for n in range(1, 51))
    assert out.text == renderer.render_digest(_ctx(ctx.items, keywords=keywords)).text


@pytest.mark.parametrize("view", [True, False])
def test_when_even_short_papers_do_not_fit_the_rest_is_pointed_to(view: bool) -> None:
    """With a budget that no shortening meets (a small one here: papers' fields are bounded, so
    50 papers without snippets fit the real one), as many papers as fit, then "N more papers
    in your browser" (or in the text part), the footer always in."""
    small = Renderer.create()
    small.html_budget = 30_000
    ctx = _ctx(tuple(_heavy(n) for n in range(1, 51)), view_url=_ctx().view_url if view else None)
    out = small.render_digest(ctx)
    assert len(out.html) <= small.html_budget and "Unsubscribe</a>" in out.html[-3000:]
    shown = out.html.count('class="paper-title"')
    assert 1 <= shown < 50
    more = re.search(r"(\d+) more papers? (in your browser|in the plain-text part)", out.html)
    assert more is not None and int(more[1]) == 50 - shown
    assert (more[2] == "in your browser") == view
    # one more paper would not have fitted
    values = {**small.digest_values(ctx), "more": 50 - shown - 1}
    shorter = [small._item_view(item, snippet_chars=0) for item in ctx.items]
    values["items"] = values["items"][:3] + shorter[3 : shown + 1]
    assert len(small._html(DIGEST_HTML, values)) > small.html_budget
    assert all(f"\n{n}. Paper {n}:" in out.text for n in range(1, 51))


def test_a_digest_within_the_budget_is_left_alone(renderer: Renderer) -> None:
    ctx = _ctx()
    out = renderer.render_digest(ctx)
    assert len(out.html) < HTML_BUDGET and "more paper" not in out.html
    assert out.html == renderer._html(DIGEST_HTML, renderer.digest_values(ctx))
