"""Source parsers: the seed paper lists and their variants, recorded feeds, hostile input."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.errors import SourceError
from digest.papers import (
    ABSTRACT_LIMIT,
    TITLE_LIMIT,
    PaperIn,
    arxiv_id,
    canonical_key,
    clean_text,
    make_paper,
    safe_url,
)
from digest.sources import MAX_ENTRIES, ParsedSource, parse_source

SEEDS = {
    "a": (
        75,
        "MARLIN: Mixed-Precision Auto-Regressive Parallel Inference on Large Language Models",
        "When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement",
    ),
    "b": (
        88,
        "Adapting Off-the-Shelf Source Segmenter for Target Medical Image Segmentation",
        "LESS: Selecting Influential Data for Targeted Instruction Tuning",
    ),
    "c": (
        81,
        "What Makes Convolutional Models Great on Long Sequence Modeling?",
        "LLMTune: Accelerate Database Knob Tuning with Large Language Models",
    ),
}
ROOT = Path(__file__).resolve().parent.parent
RSS = Path("fixtures/arxiv_rss")
ATOM = Path("fixtures/arxiv_atom")
HF_RSS = Path("fixtures/hf_rss")
HF_JSON = Path("fixtures/hf_daily_papers")
HEADER_LINES = {
    "new",
    "Get trending papers in your email inbox!",
    "Subscribe",
    "Daily Papers",
    "byAK and the research community",
    "Aug 1",
    "Mar 12",
    "Mar 11",
}


def parse_file(path: Path) -> ParsedSource:
    return parse_source(path.read_bytes(), location=str(path))


def seed_text(shared: Path, name: str) -> str:
    return (shared / "seeds" / f"daily-papers-{name}.txt").read_text(encoding="utf-8")


def titles(text: str) -> list[str]:
    return [p.title for p in parse_source(text.encode(), location="variant").papers]


def split_header(text: str, first_title: str) -> tuple[str, str]:
    """The seed's header block and the rest, which starts at the first title."""
    at = text.index(first_title)
    return text[:at], text[at:]


# --- plain-text lists -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_counts_and_titles(shared: Path, name: str) -> None:
    count, first, last = SEEDS[name]
    parsed = parse_file(shared / "seeds" / f"daily-papers-{name}.txt")
    assert parsed.kind == "text"
    assert len(parsed.papers) == count
    assert parsed.papers[0].title == first
    assert parsed.papers[-1].title == last
    assert all(p.key.startswith("title:") for p in parsed.papers)
    assert all(len(p.abstract) > 500 for p in parsed.papers)
    assert not HEADER_LINES & {p.title for p in parsed.papers}


def test_seeds_share_papers(shared: Path) -> None:
    keys = [
        {p.key for p in parse_file(shared / "seeds" / f"daily-papers-{n}.txt").papers}
        for n in sorted(SEEDS)
    ]
    assert keys[0] & keys[1]
    assert keys[0] & keys[2]
    assert keys[1] & keys[2]


def test_seed_abstract_is_whole(shared: Path) -> None:
    parsed = parse_file(shared / "seeds" / "daily-papers-a.txt")
    marlin = parsed.papers[0]
    assert marlin.abstract.startswith("As inference on Large Language Models (LLMs) emerges")
    assert marlin.abstract.endswith("leading to additional speedups.")


def _no_blank_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.strip())


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def _doubled_blanks(text: str) -> str:
    return text.replace("\n\n", "\n\n\n\n")


def _blank_only_between_papers(text: str) -> str:
    # Title and abstract on consecutive lines, a blank line between papers.
    return re.sub(r"\n\n(?=[^\n]{200,})", "\n", text)


def _trailing_spaces_and_tabs(text: str) -> str:
    return "\n".join(f"  {line}\t " for line in text.splitlines())


VARIANTS = {
    "no-blank-lines": _no_blank_lines,
    "crlf": _crlf,
    "crlf-no-blank-lines": lambda t: _crlf(_no_blank_lines(t)),
    "doubled-blank-lines": _doubled_blanks,
    "title-abstract-adjacent": _blank_only_between_papers,
    "indented": _trailing_spaces_and_tabs,
}


@pytest.mark.parametrize("name", sorted(SEEDS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_seed_variants_give_same_titles(shared: Path, name: str, variant: str) -> None:
    text = seed_text(shared, name)
    assert titles(VARIANTS[variant](text)) == titles(text)


@pytest.mark.parametrize("name", sorted(SEEDS))
@pytest.mark.parametrize("glue", ["Daily Papers", "Subscribe", "date"])
def test_header_glued_to_first_title(shared: Path, name: str, glue: str) -> None:
    text = seed_text(shared, name)
    expected = titles(text)
    header, rest = split_header(text, SEEDS[name][1])
    date = header.strip().splitlines()[-1]
    word = date if glue == "date" else glue
    glued = header[: header.rindex(date)] + word + rest  # "Mar 12Adapting Off-the-Shelf …"
    assert titles(glued) == expected
    assert titles(_no_blank_lines(glued)) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Hugging Face\n\nModels\nDatasets\nSpaces\nPosts\nDocs\n\nPapers\n\nSign In\nSign Up\n\n",
        "Trending Papers\n\nby AK and the research community\n\nJuly 31, 2024\n\nSubmit\n\n",
        "Daily Papers\nWednesday, Jul 31\nPrevious\nNext\n",
        "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\n2024-08-01\n\n",
        "Curated by the community\n\nPapers sent in by readers and picked by hand every weekday.\n",
    ],
)
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_different_headers(shared: Path, name: str, header: str) -> None:
    text = seed_text(shared, name)
    _, rest = split_header(text, SEEDS[name][1])
    footer = "\n\nPrevious\n\nNext\n\nSystem theme\n\nCompany\nTOS\nPrivacy\n"
    assert titles(header + rest + footer) == titles(text)


def test_short_abstract_under_clear_title(shared: Path) -> None:
    text = seed_text(shared, "a")
    short = "We show that small models can learn simple tasks quickly with a tiny amount of data."
    extra = f"\nA Short Paper: Quick Learning in Small Models\n\n{short}\n\n"
    parsed = parse_source((text + "\n" + extra).encode(), location="x").papers
    assert parsed[-1].title == "A Short Paper: Quick Learning in Small Models"
    assert parsed[-1].abstract == short
    assert len(parsed) == 76
    # The same in the middle of the list, and with no blank lines at all.
    header, rest = split_header(text, SEEDS["a"][1])
    middle = header + extra + rest
    assert titles(middle)[0] == "A Short Paper: Quick Learning in Small Models"
    assert titles(_no_blank_lines(middle)) == titles(middle)


def test_text_without_papers_is_an_error() -> None:
    with pytest.raises(SourceError, match="not a paper list"):
        parse_source(b"new\n\nSubscribe\n\nDaily Papers\n\nAug 1\n", location="x")


def test_text_dedupes_by_title_first_wins(shared: Path) -> None:
    text = seed_text(shared, "a")
    parsed = parse_source((text + "\n\n" + text).encode(), location="x")
    assert len(parsed.papers) == 75


def test_bundled_sample_is_a_paper_list() -> None:
    parsed = parse_file(ROOT / "digest/data/sample-papers.txt")
    assert parsed.kind == "text" and len(parsed.papers) == 48 and parsed.skipped == 0


def _markdown_table(papers: list[PaperIn]) -> str:
    rows = "".join(f"| {p.title} | {p.abstract} |\n" for p in papers)
    return "# Papers of the week\n\n| Title | Abstract |\n|---|---|\n" + rows


def _csv(papers: list[PaperIn], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(["title", "abstract", "url"])
    for p in papers:
        writer.writerow([p.title, p.abstract, p.url or "https://example.org/paper"])
    return out.getvalue()


def _plain_readme(papers: list[PaperIn]) -> str:
    # No markup at all: a heading, a paragraph, then steps that are sentences without a full stop.
    steps = "".join(
        f"Then run step number {i} of the installer and wait for it\n" for i in range(30)
    )
    return f"Installing The Paper Tools\n\n{papers[0].abstract}\n\n{steps}"


NOT_PAPER_LISTS = {
    "README.md": lambda papers: (ROOT / "README.md").read_text(encoding="utf-8"),
    "bench/README.md": lambda papers: (ROOT / "bench/README.md").read_text(encoding="utf-8"),
    "config.toml": lambda papers: (ROOT / "config.toml").read_text(encoding="utf-8"),
    "text.py": lambda papers: (ROOT / "digest/sources/text.py").read_text(encoding="utf-8"),
    "cli.py": lambda papers: (ROOT / "digest/cli.py").read_text(encoding="utf-8"),
    "markdown table": _markdown_table,
    "csv": _csv,
    "tsv": lambda papers: _csv(papers, delimiter="\t"),
    "plain readme": _plain_readme,
}


@pytest.mark.parametrize("name", sorted(NOT_PAPER_LISTS))
def test_not_a_paper_list_is_refused(shared: Path, name: str) -> None:
    papers = parse_file(shared / "seeds" / "daily-papers-a.txt").papers
    data = NOT_PAPER_LISTS[name](papers).encode()
    with pytest.raises(SourceError, match="not a paper list"):
        parse_source(data, location=name)


def test_design_notes_are_not_a_paper_list(shared: Path) -> None:
    with pytest.raises(SourceError, match="not a paper list"):
        parse_file(shared / "DESIGN.md")


def test_stray_markup_in_a_paper_list_is_skipped(shared: Path) -> None:
    text = seed_text(shared, "a")
    stray = (
        "\n## Notes from the editor\n\n" + "This week we read many papers on language models. " * 5
    )
    parsed = parse_source((text + stray).encode(), location="x")
    assert len(parsed.papers) == 75 and parsed.skipped == 1
    assert all(not p.title.startswith("#") for p in parsed.papers)


# --- Hugging Face Daily Papers API -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("daily_papers_2026-06-12_sotawhat.json", 30),
        ("daily_papers_2026-07-31_personal-news-feed.json", 30),
        ("daily_papers_2026-08-03_3items_pretty_NewsAssistant.json", 3),
    ],
)
def test_hf_daily_counts(shared: Path, name: str, count: int) -> None:
    path = shared / HF_JSON / name
    parsed = parse_file(path)
    assert parsed.kind == "hf-daily"
    assert len(parsed.papers) == count
    raw = json.loads(path.read_bytes())
    assert [p.key for p in parsed.papers] == [f"arxiv:{e['paper']['id']}" for e in raw]
    assert [p.upvotes for p in parsed.papers] == [e["paper"]["upvotes"] for e in raw]
    assert [p.comments for p in parsed.papers] == [e["numComments"] for e in raw]


def test_hf_daily_paper_fields(shared: Path) -> None:
    path = shared / HF_JSON / "daily_papers_2026-08-03_3items_pretty_NewsAssistant.json"
    raw = json.loads(path.read_bytes())[0]
    paper = parse_file(path).papers[0]
    assert paper.key == "arxiv:2607.26654" == f"arxiv:{raw['paper']['id']}"
    assert paper.title == "Constitutional Midtraining: Content Presence Drives Alignment Gains"
    assert paper.authors == tuple(a["name"] for a in raw["paper"]["authors"])
    assert paper.authors[:2] == ("Desiree Cho", "Cameron Tice")
    assert (paper.upvotes, paper.comments) == (3, 1)
    assert paper.code_url == "https://github.com/desBugger/constitutional-mt"
    assert paper.url == "https://arxiv.org/abs/2607.26654"
    assert paper.pdf_url == "https://arxiv.org/pdf/2607.26654"
    assert paper.published_at == datetime(2026, 7, 29, tzinfo=UTC)
    assert paper.abstract.startswith("Post-training alignment is often shallow")


def test_hf_daily_hidden_author_left_out(shared: Path) -> None:
    path = shared / HF_JSON / "daily_papers_2026-06-12_sotawhat.json"
    paper = next(p for p in parse_file(path).papers if p.key == "arxiv:2606.12575")
    assert "Dengyang Jiang" not in paper.authors  # "hidden": true in the file
    assert paper.authors[0] == "Dongyang Liu"
    assert len(paper.authors) == 9


def test_hf_daily_bad_entries_are_skipped() -> None:
    data = json.dumps(
        [
            {"paper": {"id": "2404.12345", "title": "Good", "upvotes": -3}, "numComments": "x"},
            {"paper": {"id": "2404.12346", "title": "   "}},
            {"paper": {"id": "2404.12347", "title": ["not", "a", "string"]}},
            {"paper": "nope"},
            42,
            {"paper": {"id": "2404.12345v2", "title": "Duplicate of the first"}},
        ]
    ).encode()
    parsed = parse_source(data, location="x")
    assert parsed.kind == "hf-daily"
    assert [p.title for p in parsed.papers] == ["Good"]
    assert parsed.papers[0].upvotes is None and parsed.papers[0].comments is None
    assert parsed.skipped == 4


def test_empty_hf_response_is_no_papers() -> None:
    assert parse_source(b"[]", location="x") == ParsedSource(kind="hf-daily", papers=[], skipped=0)


# --- arXiv RSS and API Atom -------------------------------------------------------------------


@pytest.mark.parametrize("category", ["cs.AI", "cs.CL", "cs.LG"])
def test_arxiv_rss(shared: Path, category: str) -> None:
    parsed = parse_file(shared / RSS / f"rss2_{category}_2026-04-27_trimmed3_distill.xml")
    assert parsed.kind == "arxiv-rss"
    assert len(parsed.papers) == 3
    for paper in parsed.papers:
        assert re.fullmatch(r"arxiv:\d{4}\.\d{5}", paper.key)
        assert not paper.abstract.startswith("arXiv:")
        assert "Announce Type" not in paper.abstract
        assert paper.authors and all("," not in a for a in paper.authors)
        assert paper.published_at == datetime(2026, 4, 27, 4, tzinfo=UTC)


def test_arxiv_rss_fields(shared: Path) -> None:
    parsed = parse_file(shared / RSS / "rss2_cs.AI_2026-04-27_trimmed3_distill.xml")
    paper = parsed.papers[0]
    assert paper.key == "arxiv:2604.21935"
    assert (
        paper.title == "Math Takes Two: A test for emergent mathematical reasoning in communication"
    )
    assert paper.authors == ("Michael Cooper", "Samuel Cooper")
    assert paper.abstract.startswith("Although language models demonstrate")
    assert paper.url == "https://arxiv.org/abs/2604.21935"


def test_arxiv_rss_weekend_is_empty(shared: Path) -> None:
    parsed = parse_file(shared / RSS / "rss2_cs.CL_2026-08-01_weekend_empty_All-News-AI.xml")
    assert (parsed.kind, parsed.papers, parsed.skipped) == ("arxiv-rss", [], 0)


@pytest.mark.parametrize(
    ("name", "count", "first_key"),
    [
        ("api2026_all-transformer_AND_cat-cs.LG_max5_sotawhat.xml", 5, "arxiv:2606.13677"),
        ("api2026_cat-cs.LG_OR_cat-cs.AI_max20_brevio-ai.xml", 20, "arxiv:2604.26951"),
        (
            "api2026_cat-cs.AI_OR_cs.LG_OR_cs.CL_max25_personal-news-feed.xml",
            25,
            "arxiv:2607.28628",
        ),
        ("api2026_search_query-testing_max10_arxiv.py.xml", 10, "arxiv:2202.12139"),
        ("api2026_id_list_1605.08386_arxiv.py.xml", 1, "arxiv:1605.08386"),
        ("api2026_id_list_0808.05394_1707.08567_two-ids_arxiv.py.xml", 1, "arxiv:1707.08567"),
        ("api2026_id_list_astro-ph-0601001_oldstyle-id_arxiv.py.xml", 1, "arxiv:astro-ph/0601001"),
        ("legacy2016_id_list_1111.2011v2_arxiv.py.xml", 1, "arxiv:1111.2011"),
        ("legacy2016_search_query_au-del_maestro_arxiv.py.xml", 10, "arxiv:1201.4869"),
        (
            "legacy2016_search_query_au-del_maestro_AND_ti-checkerboard_arxiv.py.xml",
            1,
            "arxiv:cond-mat/0603029",
        ),
    ],
)
def test_arxiv_atom(shared: Path, name: str, count: int, first_key: str) -> None:
    parsed = parse_file(shared / ATOM / name)
    assert parsed.kind == "arxiv-atom"
    assert len(parsed.papers) == count
    assert parsed.papers[0].key == first_key
    for paper in parsed.papers:
        assert paper.authors and paper.abstract and paper.published_at is not None
        assert "\n" not in paper.title and "  " not in paper.abstract
        assert paper.pdf_url == paper.url.replace("/abs/", "/pdf/")  # type: ignore[union-attr]


def test_arxiv_atom_legacy_fields(shared: Path) -> None:
    name = "legacy2016_search_query_au-del_maestro_AND_ti-checkerboard_arxiv.py.xml"
    paper = parse_file(shared / ATOM / name).papers[0]
    # The title is hard-wrapped in the file; the summary is wrapped and indented.
    assert paper.title == (
        "From stripe to checkerboard order on the square lattice in the presence"
        " of quenched disorder"
    )
    assert paper.abstract.startswith(
        "We discuss the effects of quenched disorder on a model of charge density wave (CDW)"
    )
    assert paper.authors == ("Adrian Del Maestro", "Bernd Rosenow", "Subir Sachdev")
    assert paper.url == "https://arxiv.org/abs/cond-mat/0603029"
    assert paper.published_at == datetime(2006, 3, 2, 2, 22, 45, tzinfo=UTC)


def test_arxiv_atom_error_feed(shared: Path) -> None:
    with pytest.raises(SourceError, match="incorrect id format for abc"):
        parse_file(shared / ATOM / "api2026_id_list_abc_error-HTTP400_arxiv.py.xml")


def test_arxiv_atom_zero_results(shared: Path) -> None:
    parsed = parse_file(shared / ATOM / "api2026_id_list_0000.0000_zero-results_arxiv.py.xml")
    assert (parsed.kind, parsed.papers) == ("arxiv-atom", [])


# --- third-party feeds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("azuresilent_hf-paper-rss_feed_2026-02-01.xml", 45),
        ("huangboming_feed_daily_2026-08-08.xml", 30),
        ("huangboming_feed_monthly_2026-08-01.xml", 105),
        ("huangboming_feed_weekly_2026-08-03.xml", 6),
        ("michaelmarkert_hf_papers_rss2.xml", 26),
        ("michaelmarkert_hf_papers_jsonfeed1.json", 26),
        ("takara_tldr_papers_2026-04-30_brevio-ai.xml", 50),
    ],
)
def test_third_party_hf_feeds(shared: Path, name: str, count: int) -> None:
    parsed = parse_file(shared / HF_RSS / name)
    assert parsed.kind == "feed"
    assert len(parsed.papers) == count
    for paper in parsed.papers:
        assert paper.title and paper.abstract
        assert re.fullmatch(r"arxiv:\d{4}\.\d{5}", paper.key)
        assert not re.search(r"</?[A-Za-z][^<>]*>", paper.abstract)  # no tags; "a <= b" stays


def test_jsonfeed_and_rss_agree(shared: Path) -> None:
    rss = parse_file(shared / HF_RSS / "michaelmarkert_hf_papers_rss2.xml")
    jf = parse_file(shared / HF_RSS / "michaelmarkert_hf_papers_jsonfeed1.json")
    assert [(p.key, p.title) for p in rss.papers] == [(p.key, p.title) for p in jf.papers]
    assert jf.papers[0].key == "arxiv:2608.19880"
    assert jf.papers[0].url == "https://huggingface.co/papers/2608.19880"


def test_labelled_feed_description(shared: Path) -> None:
    parsed = parse_file(shared / HF_RSS / "huangboming_feed_daily_2026-08-08.xml")
    paper = parsed.papers[0]
    assert paper.key == "arxiv:2607.28609"
    assert paper.upvotes == 52
    assert paper.authors[:2] == ("Qiushi Sun", "Kanzhi Cheng") and len(paper.authors) == 23
    assert paper.abstract.startswith("Computer-using agents (CUAs) are advancing rapidly")
    # Bilingual feed: the English abstract under its "Abstract" heading, not the Chinese copy.
    bilingual = parse_file(shared / HF_RSS / "azuresilent_hf-paper-rss_feed_2026-02-01.xml")
    storm = bilingual.papers[0]
    assert storm.authors == ("Alexandre Chapin", "Emmanuel Dellandréa", "Liming Chen")
    assert storm.abstract.startswith("Visual foundation models provide strong perceptual features")
    assert "视觉" not in storm.abstract


def test_feed_doi_key() -> None:
    data = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/"
     xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Journal</title>
<item><title>A journal paper</title><link>https://journal.example/article/7</link>
<prism:doi>10.1000/ABC.123</prism:doi></item>
<item><title>Another one</title><link>https://journal.example/article/8</link>
<dc:identifier>doi:10.1000/xyz</dc:identifier></item>
<item><title>No identifiers at all</title><link>https://journal.example/article/9</link></item>
</channel></rss>"""
    parsed = parse_source(data, location="https://journal.example/feed")
    assert parsed.kind == "feed"
    assert [p.key for p in parsed.papers[:2]] == ["doi:10.1000/abc.123", "doi:10.1000/xyz"]
    assert parsed.papers[2].key == canonical_key(title="No identifiers at all")
    assert parsed.papers[2].url == "https://journal.example/article/9"
    assert parsed.papers[2].pdf_url is None


# --- detection and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"   \n\r\n\t ", b"\x00\x00"],
)
def test_empty_input(data: bytes) -> None:
    with pytest.raises(SourceError, match="empty"):
        parse_source(data, location="x")


@pytest.mark.parametrize(
    "data",
    [
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b'{"error": "Rate limit reached"}',
        b'{"some": "json"}',
        bytes(range(256)) * 20,
        b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 500,
    ],
)
def test_garbage_is_a_source_error(data: bytes) -> None:
    with pytest.raises(SourceError):
        parse_source(data, location="x")


def test_kind_comes_from_content_not_name(shared: Path) -> None:
    data = (shared / RSS / "rss2_cs.LG_2026-04-27_trimmed3_distill.xml").read_bytes()
    assert (
        parse_source(data, location="papers.json", content_type="application/json").kind
        == "arxiv-rss"
    )


def test_entries_are_bounded() -> None:
    items = [
        {"paper": {"id": f"2404.{i:05d}", "title": f"Paper {i}"}} for i in range(MAX_ENTRIES + 7)
    ]
    parsed = parse_source(json.dumps(items).encode(), location="x")
    assert len(parsed.papers) == MAX_ENTRIES
    assert parsed.cut == 7 and parsed.skipped == 0


def _item(i: int) -> str:
    return (
        f"<item><title>Paper number {i}</title><link>https://example.org/p/{i}</link>"
        f"<description>Abstract {i}.</description></item>"
    )


def _entry(i: int) -> str:
    return (
        f"<entry><title>Paper number {i}</title><id>urn:p:{i}</id>"
        f'<link href="https://example.org/p/{i}"/><summary>Abstract {i}.</summary>'
        "<updated>2026-04-27T00:00:00Z</updated></entry>"
    )


def _big_sources(n: int, seed: str) -> dict[str, bytes]:
    rss = "".join(map(_item, range(n)))
    atom = "".join(map(_entry, range(n)))
    json_feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "t",
        "items": [
            {"id": str(i), "title": f"Paper number {i}", "url": f"https://example.org/p/{i}"}
            for i in range(n)
        ],
    }
    hf_items = [{"paper": {"id": f"2404.{i:05d}", "title": f"Paper number {i}"}} for i in range(n)]
    header, rest = seed.split("\n\nMARLIN", 1)
    pairs = rest.split("\n\n")[2:]  # title and abstract paragraphs after the first paper
    return {
        "rss": f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{rss}'
        "<ttl>60</ttl></channel></rss>".encode(),
        "rss1": (
            '<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
            ' xmlns="http://purl.org/rss/1.0/"><channel rdf:about="x"><title>t</title></channel>'
            f"{rss}</rdf:RDF>"
        ).encode(),
        "atom": (
            '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
            f"{atom}</feed>"
        ).encode(),
        "json-feed": json.dumps(json_feed).encode(),
        "hf-daily": json.dumps(hf_items).encode(),
        "text": (header + "\n\n" + "\n\n".join(pairs[: 2 * n])).encode(),
    }


@pytest.mark.parametrize("kind", ["rss", "rss1", "atom", "json-feed", "hf-daily", "text"])
def test_max_entries_keeps_the_first_and_counts_the_rest(shared: Path, kind: str) -> None:
    data = _big_sources(60, seed_text(shared, "a"))[kind]
    parsed = parse_source(data, location="x", max_entries=25)
    assert len(parsed.papers) == 25 and parsed.skipped == 0
    assert parsed.cut == 35
    everything = parse_source(data, location="x", max_entries=10_000)
    assert [p.title for p in parsed.papers] == [p.title for p in everything.papers[:25]]
    assert everything.cut == 0 and len(everything.papers) == 60


def test_feed_is_cut_before_it_is_parsed(shared: Path) -> None:
    # Only the first entries reach feedparser: an arXiv entry past the cap does not even make
    # the feed read as arXiv's.
    data = _big_sources(30, seed_text(shared, "a"))["rss"]
    marked = data.replace(
        b"<title>Paper number 20</title>",
        b"<guid>oai:arXiv.org:2404.12345v1</guid><title>Paper number 20</title>",
    )
    assert parse_source(marked, location="x", max_entries=25).kind == "arxiv-rss"
    capped = parse_source(marked, location="x", max_entries=10)
    assert capped.kind == "feed" and len(capped.papers) == 10 and capped.cut == 20


# --- hostile input ----------------------------------------------------------------------------


def _rss(title: str, description: str = "d", link: str = "https://example.org/p") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        f"<item><title>{title}</title><link>{link}</link><description>{description}</description>"
        "</item></channel></rss>"
    ).encode()


def test_script_in_title_becomes_text() -> None:
    for title in (
        "Nice &lt;script&gt;alert(1)&lt;/script&gt; paper",
        "Nice &amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt; paper",
        "Nice <![CDATA[<script>alert(1)</script>]]> paper",
    ):
        paper = parse_source(_rss(title), location="x").papers[0]
        assert "<script" not in paper.title.lower()
        assert "<" not in paper.title and ">" not in paper.title
        assert paper.title.startswith("Nice") and paper.title.endswith("paper")
    text = "Nice <script>alert(1)</script> paper\n\n" + "An abstract sentence that is long. " * 10
    paper = parse_source(text.encode(), location="x").papers[0]
    assert "<script" not in paper.title


def test_crlf_in_title_is_gone() -> None:
    paper = parse_source(
        _rss("Line one&#13;&#10;Bcc: victim@example.org\r\nLine two"), location="x"
    ).papers[0]
    assert "\r" not in paper.title and "\n" not in paper.title
    assert paper.title == "Line one Bcc: victim@example.org Line two"


def test_huge_abstract_is_bounded() -> None:
    abstract = "word " * 200_000  # 1 MB
    data = json.dumps([{"paper": {"id": "2404.00001", "title": "T" * 5000, "summary": abstract}}])
    paper = parse_source(data.encode(), location="x").papers[0]
    assert len(paper.abstract) <= ABSTRACT_LIMIT
    assert paper.abstract.endswith("…")
    assert len(paper.title) <= TITLE_LIMIT
    text = "A Title\n\n" + "This is a very long sentence. " * 40_000
    paper = parse_source(text.encode(), location="x").papers[0]
    assert len(paper.abstract) <= ABSTRACT_LIMIT


def test_invalid_utf8_does_not_crash(shared: Path) -> None:
    raw = (shared / "seeds" / "daily-papers-a.txt").read_bytes()
    broken = raw.replace(b"MARLIN", b"MAR\xff\xfeLIN", 1).replace(b"LLMTune", b"LLM\xc3Tune", 1)
    parsed = parse_source(broken, location="x")
    assert len(parsed.papers) == 75
    assert "\ufffd" in parsed.papers[0].title
    parse_source(_rss("caf\xe9").replace(b"\xc3\xa9", b"\xe9"), location="x")
    with pytest.raises(SourceError):
        parse_source(b"[\xff\xfe" + b"\x80" * 100, location="x")


def test_javascript_link_is_dropped() -> None:
    paper = parse_source(_rss("A paper", link="javascript:alert(1)"), location="x").papers[0]
    assert paper.url is None
    data = json.dumps(
        [{"paper": {"id": "2404.12345", "title": "T", "githubRepo": "javascript:alert(1)"}}]
    )
    assert parse_source(data.encode(), location="x").papers[0].code_url is None


def test_deep_json_nesting() -> None:
    with pytest.raises(SourceError):
        parse_source(b"[" * 100_000 + b"]" * 100_000, location="x")


# --- normalisation helpers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oai:arXiv.org:2404.12345v2", "2404.12345"),
        ("http://arxiv.org/abs/2404.12345v1", "2404.12345"),
        ("https://huggingface.co/papers/2404.12345", "2404.12345"),
        ("https://tldr.takara.ai/p/2404.12345", "2404.12345"),
        ("https://arxiv.org/pdf/2411.01234v3.pdf", "2411.01234"),
        ("arXiv:0704.0001", "0704.0001"),
        ("http://arxiv.org/abs/cond-mat/0603029v1", "cond-mat/0603029"),
        ("astro-ph/0601001", "astro-ph/0601001"),
        ("math.GT/0309136", "math.GT/0309136"),
        ("0000.0000", None),
        ("https://example.org/posts/1234567", None),
        ("version 12.34567.1", None),
        ("", None),
        (None, None),
    ],
)
def test_arxiv_id(text: str | None, expected: str | None) -> None:
    assert arxiv_id(text) == expected


def test_canonical_key() -> None:
    assert canonical_key(arxiv="2404.12345v2", doi="10.1/x", title="T") == "arxiv:2404.12345"
    assert (
        canonical_key(doi="https://doi.org/10.1103/PhysRevB.74", title="T")
        == "doi:10.1103/physrevb.74"
    )
    key = canonical_key(title="Attention Is All You Need")
    assert re.fullmatch(r"title:[0-9a-f]{20}", key)
    assert canonical_key(title="attention is all you need!") == key
    assert canonical_key(title="Ａｔｔｅｎｔｉｏｎ  is all-you need") == key  # NFKC full-width
    assert canonical_key(title="Attention is all you want") != key


def test_clean_text() -> None:
    assert (
        clean_text("<p>Hello&nbsp;<b>world</b></p><p>again</p>", limit=100) == "Hello world again"
    )
    assert clean_text("a &amp;lt; b and x < y > z", limit=100) == "a < b and x < y > z"
    assert clean_text("H<sub>2</sub>O\u202e\u200b\x00\x07 ok\r\n\tfine", limit=100) == "H2O ok fine"
    bounded = clean_text("alpha beta gamma delta epsilon", limit=15)
    assert bounded == "alpha beta…" and len(bounded) <= 15
    assert clean_text(None, limit=10) == ""


def test_safe_url() -> None:
    assert safe_url(" https://arxiv.org/abs/1 ") == "https://arxiv.org/abs/1"
    assert safe_url("HTTP://example.org") == "HTTP://example.org"
    for bad in (
        "javascript:alert(1)",
        "data:text/html,<script>",
        "ftp://example.org/x",
        "//example.org",
        "https://arxiv.org@evil.example/",
        "https://exa mple.org",
        "https://example.org/\r\nX: y",
        "https://example.org/" + "a" * 2000,
        "",
        None,
    ):
        assert safe_url(bad) is None


def test_make_paper_bounds() -> None:
    assert make_paper(title="  <b></b> ") is None
    paper = make_paper(
        title="T",
        authors=[f"Author {i}" for i in range(500)] + ["x" * 1000],
        upvotes=-1,
        comments=True,
        published_at=datetime(2026, 1, 1, 12),
        arxiv="2404.12345v9",
        url="javascript:x",
    )
    assert paper is not None
    assert len(paper.authors) == 100
    assert paper.upvotes is None and paper.comments is None
    assert paper.published_at == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert paper.url == "https://arxiv.org/abs/2404.12345"
    long_author = make_paper(title="T", authors=["x" * 1000])
    assert long_author is not None and len(long_author.authors[0]) <= 200
