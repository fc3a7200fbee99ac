"""Ranking: phrases, fields, variants, exclusions, explanations; a batch equals one by one."""

from __future__ import annotations

import gc
import random
import re
from pathlib import Path

import numpy as np
import pytest

from digest.keywords import MAX_KEYWORD_CHARS, MAX_KEYWORDS, parse_keywords
from digest.ranking import (
    Doc,
    Index,
    Match,
    Profile,
    Ranked,
    RankedList,
    _index_tokens,
    _kth_bound,
    _Positions,
    _scan,
    _top,
    highlight_spans,
    rank,
)

FILLER = "Details are given in the main text."


def doc(key: str, title: str, abstract: str = FILLER, upvotes: int | None = None) -> Doc:
    return Doc(key=key, title=title, abstract=abstract, upvotes=upvotes)


def keys_for(docs: list[Doc], *keywords: str, **profile: object) -> list[str]:
    """The ranked keys for one profile with ``keywords``."""
    (ranked,) = rank(docs, [Profile(id=1, keywords=keywords, **profile)])  # type: ignore[arg-type]
    return [r.key for r in ranked]


def seed_papers(shared: Path) -> list[Doc]:
    """Papers from the seed lists: paragraphs after the date line, title then abstract."""
    docs = []
    for path in sorted((shared / "seeds").glob("daily-papers-*.txt")):
        paragraphs = [p.strip() for p in path.read_text().split("\n\n") if p.strip()]
        start = next(i for i, p in enumerate(paragraphs) if re.fullmatch(r"[A-Z][a-z]{2} \d+", p))
        body = paragraphs[start + 1 :]
        for n, (title, abstract) in enumerate(zip(body[0::2], body[1::2], strict=False)):
            docs.append(Doc(key=f"{path.stem}:{n:03d}", title=title, abstract=abstract))
    return docs


# relevance


def test_phrase_beats_the_same_words_scattered() -> None:
    docs = [
        doc("a", "Serving models faster", "Efficient LLM inference on one GPU with paged memory."),
        doc(
            "b", "Inference of causal graphs", "We use an LLM to propose edges; inference is exact."
        ),
        doc("c", "Causal inference in economics", "Statistical inference for treatment effects."),
    ]
    (ranked,) = rank(docs, [Profile(id=1, keywords=("llm inference",))])
    assert [r.key for r in ranked] == ["a", "b", "c"]
    # a paper that only has one word of the phrase comes last, far below, marked as partial
    assert ranked[2].score < 0.2 * ranked[0].score
    assert all(m.partial for m in ranked[2].matches)


def test_one_common_word_does_not_outrank_the_phrase_even_in_the_title() -> None:
    docs = [
        doc("phrase", "A new benchmark", "We study dataset distillation for vision."),
        doc("word", "Dataset dataset dataset: a large dataset", "A dataset of datasets."),
    ]
    (ranked,) = rank(docs, [Profile(id=1, keywords=("dataset distillation",))])
    assert [r.key for r in ranked] == ["phrase", "word"]
    assert ranked[1].score < 0.2 * ranked[0].score


def test_title_beats_abstract() -> None:
    docs = [
        doc("abstract", "Efficient serving", "We apply quantization to weights."),
        doc("title", "Quantization for efficient serving", FILLER),
    ]
    assert keys_for(docs, "quantization") == ["title", "abstract"]


def test_scores_sum_over_keywords() -> None:
    docs = [
        doc("one", "Speculative decoding", FILLER),
        doc("two", "Speculative decoding with quantization", FILLER),
    ]
    assert keys_for(docs, "speculative decoding", "quantization") == ["two", "one"]


def test_nothing_matching_gives_an_empty_list() -> None:
    docs = [doc("a", "Protein folding with diffusion"), doc("b", "Graph neural networks")]
    assert keys_for(docs, "speech recognition", "quantum error correction") == []
    assert keys_for(docs, "of the", "") == []  # stopwords and empty strings match nothing
    assert rank([], [Profile(id=1, keywords=("anything",))]) == [[]]


def test_exclusions_remove_a_paper_matched_anywhere() -> None:
    docs = [
        doc("title", "Medical image segmentation with transformers", FILLER),
        doc("abstract", "Image segmentation at scale", "Applied to medical imaging and CT scans."),
        doc("acronym", "Segmentation with an LLM", FILLER),
        doc("kept", "Image segmentation for robots", FILLER),
    ]
    assert keys_for(docs, "segmentation", exclude=("medical",)) == ["acronym", "kept"]
    kept = keys_for(docs, "segmentation", exclude=("large language models",))
    assert sorted(kept) == ["abstract", "kept", "title"]  # the expansion excludes "LLM" too


def test_seen_papers_are_never_returned() -> None:
    docs = [doc(k, f"Quantization study {k}") for k in "abc"]
    ranked = keys_for(docs, "quantization", seen=frozenset({"b", "zzz"}))
    assert ranked == ["a", "c"]


def test_limit_and_ties_go_to_the_smaller_key() -> None:
    docs = [doc(k, "Quantization of weights", "Same text.") for k in ("d", "b", "c", "a")]
    assert keys_for(docs, "quantization", limit=3) == ["a", "b", "c"]
    assert keys_for(docs, "quantization", limit=0) == []


def test_upvotes_break_ties_but_do_not_beat_relevance() -> None:
    docs = [
        doc("a", "Quantization of weights", "Same text.", upvotes=0),
        doc("b", "Quantization of weights", "Same text.", upvotes=500),
        doc("c", "Weights", "Quantization in the abstract only.", upvotes=10_000),
    ]
    assert keys_for(docs, "quantization") == ["b", "a", "c"]


def test_a_passing_mention_counts_less_than_the_subject() -> None:
    tail = " ".join(["Other words fill the abstract."] * 6)
    docs = [
        doc("late", "Training recipes", f"We study schedules. {tail} We also try quantization."),
        doc("early", "Training recipes", f"We study quantization. {tail} We also try schedules."),
        doc("title", "Quantization recipes", f"We study schedules. {tail}"),
    ]
    (ranked,) = rank(docs, [Profile(id=1, keywords=("quantization",))])
    assert [r.key for r in ranked] == ["title", "early", "late"]
    assert ranked[2].score < 0.6 * ranked[1].score


def test_words_side_by_side_in_another_order_beat_scattered_words() -> None:
    docs = [
        doc("near", "Optimizing prompts for reasoning", FILLER),
        doc("far", "Prompt design", "A study of optimization in deep networks."),
    ]
    assert keys_for(docs, "prompt optimization") == ["near", "far"]


def test_an_acronym_counts_as_its_expansion() -> None:
    docs = [
        doc("dpo", "Preference optimization without a reward model", FILLER),
        doc("other", "Direct estimation of depth", FILLER),
    ]
    (ranked,) = rank(docs, [Profile(id=1, keywords=("DPO",))])
    assert [r.key for r in ranked] == ["dpo", "other"]
    assert ranked[0].reason() == 'matched words of "DPO" in the title'


def test_a_word_inside_another_term_of_art_does_not_count() -> None:
    docs = [
        doc("moe", "Sparse mixture of experts layers", "Each mixture of experts routes tokens."),
        doc("data", "Choosing the data mixture", FILLER),
        doc("word", "A Gaussian mixture model", FILLER),
    ]
    assert keys_for(docs, "data mixtures") == ["data", "word"]
    assert keys_for(docs, "mixture of experts")[0] == "moe"
    text = "Sparse mixture of experts layers and a Gaussian mixture."
    assert marked(text, ["data mixtures"]) == ["mixture"]  # the highlight agrees


def test_serving_is_not_serves_as() -> None:
    docs = [
        doc("serving", "Fast LLM serving", FILLER),
        doc("serves", "A benchmark", "This dataset serves as a testbed."),
    ]
    assert keys_for(docs, "serving") == ["serving"]


def test_duplicate_keys_keep_the_first_paper() -> None:
    docs = [doc("a", "Quantization"), doc("a", "Something else")]
    assert keys_for(docs, "quantization") == ["a"]


# variants


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("test-time adaptation", "A study of test time adaptation"),
        ("test time adaptation", "A study of test-time adaptation"),
        ("pre-training", "Scaling pretraining data"),
        ("pretraining", "Scaling pre-training data"),
        ("pretraining", "Models pre-trained on the web"),
        ("pre-train", "Scaling pre-training data"),
        ("mixture of experts", "Sparse mixture-of-experts layers"),
        ("mixture-of-experts", "A mixture of experts for vision"),
        ("quantisation", "Post-training quantization"),
        ("quantization", "Post-training quantisation"),
        ("behaviour", "Emergent behavior of agents"),
        ("naive bayes", "A naïve Bayes baseline"),
        ("multimodal", "Multi-modal reasoning"),
    ],
)
def test_hyphen_and_spelling_variants_match(keyword: str, text: str) -> None:
    assert keys_for([doc("a", text)], keyword) == ["a"]


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("LLM", "What large language models know"),
        ("large language models", "Efficient LLMs on phones"),
        ("llm", "Efficient LLMs on phones"),
        ("LLMs", "An LLM agent"),
        ("MoE", "Scaling mixture of experts"),
        ("mixture of experts", "AquilaMoE: efficient training for MoE models"),
        ("moe", "Sparse MoE layers"),
        ("RAG", "Retrieval-augmented generation for QA"),
        ("retrieval augmented generation", "Better RAG pipelines"),
        ("RLHF", "Reinforcement learning from human feedback at scale"),
        ("reinforcement learning from human feedback", "RLHF without reward models"),
        ("ASR", "Speech recognition for low-resource languages"),
        ("automatic speech recognition", "Streaming ASR"),
        ("NeRF", "Neural radiance fields for cities"),
        ("vision transformer", "Pruning ViTs"),
        ("ViT", "Vision Transformers need registers"),
        ("knowledge distillation", "KD for small models"),
        ("LLM inference", "Fast large language model inference"),
    ],
)
def test_acronyms_and_expansions_match_both_ways(keyword: str, text: str) -> None:
    assert keys_for([doc("a", text)], keyword) == ["a"]


@pytest.mark.parametrize("text", ["Quantize", "Quantized weights", "Quantization", "Quantizing"])
def test_stemming_joins_one_idea(text: str) -> None:
    assert keys_for([doc("a", text)], "quantization") == ["a"]
    assert keys_for([doc("a", text)], "quantized") == ["a"]


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("universe", "A university course on physics"),
        ("policy", "Police records as data"),
        ("experiment", "Learning from experience"),
        ("transformer", "A data transformation pipeline"),
        ("generalization", "A general recipe for training"),
        ("natural", "The nature of attention"),
        ("indices", "What the results indicate"),
        ("RAG", "A drag-and-drop editor"),
        ("ASR", "Asymmetric search"),
    ],
)
def test_stemming_does_not_merge_different_ideas(keyword: str, text: str) -> None:
    assert keys_for([doc("a", text)], keyword) == []


def test_phrases_do_not_cross_punctuation() -> None:
    docs = [doc("a", "Which language? Models of grammar", "Language. Models differ.")]
    (ranked,) = rank(docs, [Profile(id=1, keywords=("language models",))])
    assert all(m.partial for r in ranked for m in r.matches)


# explanations and highlights


def test_explanations_name_the_keyword_and_field() -> None:
    docs = [
        doc(
            "a",
            "Quantization for LLM serving",
            "We speed up LLM inference; quantization and large language model inference again.",
        )
    ]
    (ranked,) = rank(docs, [Profile(id=1, keywords=("quantization", "LLM inference", "cats"))])
    (r,) = ranked
    assert r.matches == (
        Match(keyword="quantization", field="title", count=1),
        Match(keyword="quantization", field="abstract", count=1),
        Match(keyword="LLM inference", field="abstract", count=2),
    )
    assert r.reason() == (
        'matched "quantization" in the title and abstract, "LLM inference" in the abstract'
    )


def test_partial_matches_are_marked_and_explained() -> None:
    docs = [doc("a", "Inference on a budget", "An LLM answers questions.")]
    (ranked,) = rank(docs, [Profile(id=1, keywords=("llm inference",))])
    (r,) = ranked
    assert {m.field for m in r.matches} == {"title", "abstract"}
    assert all(m.partial for m in r.matches)
    assert r.reason() == 'matched words of "llm inference" in the title and abstract'
    assert Ranked(key="x", score=0.0, matches=()).reason() == ""


def marked(text: str, keywords: list[str]) -> list[str]:
    return [text[a:b] for a, b in highlight_spans(text, keywords)]


def test_highlight_marks_whole_phrases_and_variants() -> None:
    text = "Mixture-of-Experts (MoE) models: test time adaptation for large language models."
    assert marked(text, ["mixture of experts"]) == ["Mixture-of-Experts", "MoE"]
    assert marked(text, ["test-time adaptation", "LLM"]) == [
        "test time adaptation",
        "large language models",
    ]
    assert marked(text, ["quantization"]) == []


def test_highlight_marks_single_words_when_the_phrase_is_absent() -> None:
    text = "Inference for an LLM, and more inference."
    assert marked(text, ["llm inference"]) == ["Inference", "LLM", "inference"]
    assert marked("Fast LLM inference, LLM", ["llm inference"]) == ["LLM inference"]


def test_highlight_spans_are_sorted_and_do_not_overlap() -> None:
    text = "Efficient large language model inference with large language models."
    spans = highlight_spans(text, ["large language model", "language model inference", "LLM"])
    assert spans == sorted(spans)
    assert all(a < b <= c for (a, b), (c, _) in zip(spans, spans[1:], strict=False))
    assert [text[a:b] for a, b in spans] == [
        "large language model inference",
        "large language models",
    ]


def test_highlight_agrees_with_what_the_ranker_matched(shared: Path) -> None:
    docs = seed_papers(shared)
    keywords = (
        "quantization",
        "mixture of experts",
        "LLM inference",
        "dataset distillation",
        "speech recognition",
        "RLHF",
        "test-time adaptation",
        "domain adaptation",
    )
    by_key = {d.key: d for d in docs}
    (ranked,) = rank(docs, [Profile(id=1, keywords=keywords, limit=40)])
    assert len(ranked) == 40
    for r in ranked:
        paper = by_key[r.key]
        for field, text in (("title", paper.title), ("abstract", paper.abstract)):
            in_field = [m for m in r.matches if m.field == field]
            for m in in_field:
                spans = highlight_spans(text, [m.keyword])
                assert spans, (r.key, m)
                if not m.partial:
                    assert len(spans) <= m.count  # one span per occurrence (adjacent ones merge)
            # single-word keywords are highlighted exactly where they matched
            for keyword in ("quantization", "RLHF"):
                if not any(m.keyword == keyword for m in in_field):
                    assert highlight_spans(text, [keyword]) == []


def test_seeds_rank_the_obvious_papers_first(shared: Path) -> None:
    docs = seed_papers(shared)
    assert len(docs) > 200
    titles = {d.key: d.title for d in docs}
    (quant, moe) = rank(
        docs,
        [
            Profile(id=1, keywords=("quantization",), limit=5),
            Profile(id=2, keywords=("mixture of experts",), limit=5),
        ],
    )
    assert len(quant) == len(moe) == 5
    assert all(re.search(r"(?i)quantiz", titles[r.key]) for r in quant)
    assert all(re.search(r"(?i)mixture.of.expert|moe\b", titles[r.key]) for r in moe)
    assert all(r.score > 0 and r.matches for r in quant + moe)


# batches


def test_many_profiles_at_once_equal_each_alone(shared: Path) -> None:
    docs = seed_papers(shared)
    rng = random.Random(7)
    vocabulary = [
        "quantization", "language models", "mixture of experts", "LLM", "diffusion",
        "reinforcement learning", "speech", "segmentation", "benchmark", "pre-training",
        "knowledge distillation", "RAG", "agents", "vision transformer", "inference",
        "domain adaptation", "code generation", "reasoning", "long context", "data",
    ]  # fmt: skip
    keys = [d.key for d in docs]
    profiles = [
        Profile(
            id=i,
            keywords=tuple(rng.sample(vocabulary, rng.randint(1, 6))),
            exclude=tuple(rng.sample(vocabulary, rng.randint(0, 1))),
            limit=rng.choice((0, 1, 3, 10, 25)),
            seen=frozenset(rng.sample(keys, rng.randint(0, 30))),
        )
        for i in range(300)
    ]
    index = Index.build(docs)
    together = list(index.rank(iter(profiles), chunk=16))
    assert [p for p, _ in together] == profiles  # streamed in input order
    # another index compiles the keywords in another order: the results must not depend on it
    other = Index.build(docs)
    alone = [next(other.rank([p]))[1] for p in profiles]
    assert [r for _, r in together] == alone
    assert [rank(docs, [p])[0] for p in profiles[:5]] == alone[:5]
    assert sum(len(r) for r in alone) > 300
    for profile, ranked in together:
        assert len(ranked) <= profile.limit
        assert not {r.key for r in ranked} & profile.seen
        assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


def test_ranking_is_bounded() -> None:
    docs = [doc("a", "Quantization " * 10_000, "word " * 100_000)]
    keywords = tuple(f"keyword{i}" for i in range(1_000)) + ("quantization",)
    (ranked,) = rank(docs, [Profile(id=1, keywords=keywords)])
    assert ranked == []  # only the first MAX_KEYWORDS keywords count
    (ranked,) = rank(docs, [Profile(id=1, keywords=("x" * 10_000, "quantization"))])
    assert [r.key for r in ranked] == ["a"]


# keywords


def test_parse_keywords_splits_trims_and_dedupes() -> None:
    assert parse_keywords("llm inference, quantization; RLHF") == (
        "llm inference",
        "quantization",
        "RLHF",
    )
    assert parse_keywords(" A ,a,\n\n b  c ;; B   C\r\nd\t") == ("A", "b c", "d")
    assert parse_keywords("") == ()
    assert parse_keywords(" ,;\n") == ()


def test_parse_keywords_keeps_markup_as_text() -> None:
    (keyword,) = parse_keywords("<script>alert(1)</script>")
    assert keyword == "<script>alert(1)</script>"
    assert parse_keywords("<b>llm</b>, x\u202ey\x00z") == ("<b>llm</b>", "x y z")


def test_parse_keywords_is_bounded() -> None:
    parsed = parse_keywords(", ".join(f"topic {i}" for i in range(1_000)))
    assert len(parsed) == MAX_KEYWORDS
    assert parsed[0] == "topic 0"
    (long,) = parse_keywords("x" * 10_000)
    assert len(long) == MAX_KEYWORD_CHARS
    assert len(parse_keywords("a," * 1_000_000)) == 1


def test_ranked_lists_are_lazy_read_only_sequences() -> None:
    docs = [doc(k, f"Quantization study {k}") for k in "abc"]
    index = Index.build(docs)
    [(_, ranked)] = list(index.rank([Profile(id=1, keywords=("quantization",), limit=2)]))
    assert isinstance(ranked, RankedList)
    assert len(ranked) == 2 and ranked
    assert [r.key for r in ranked] == ["a", "b"]
    assert ranked[0].key == "a" and [r.key for r in ranked[1:]] == ["b"]
    assert ranked == list(ranked) and ranked == tuple(ranked)
    assert ranked != [] and RankedList.empty() == []
    assert not RankedList.empty() and len(RankedList.empty()) == 0
    assert "Ranked(" in repr(ranked)


@pytest.mark.parametrize(
    ("papers", "k", "values"),
    [
        (40, 10, 6),  # few columns: each row partitioned whole
        (1037, 10, 6),  # column groups, 37 columns left over, many ties
        (1000, 20, 1000),  # column groups, few ties: the bound is often the k-th best itself
        (503, 3, 3),  # column groups, nearly every score tied
    ],
)
def test_top_k_equals_a_plain_sort(papers: int, k: int, values: int) -> None:
    rng = np.random.default_rng(3)
    # few distinct values: many ties, inside and at the edge of the top k; a third are zero
    scores = rng.integers(0, values, size=(200, papers)).astype(np.float32) / 2
    scores[rng.random(scores.shape) < 0.3] = 0
    limits = rng.integers(0, k + 2, size=200)
    best, values_, counts = _top(scores.copy(), k, limits)
    for row in range(200):
        expected = sorted(
            (c for c in range(papers) if scores[row, c] > 0), key=lambda c: (-scores[row, c], c)
        )[: min(limits[row], k)]
        assert best[row, : counts[row]].tolist() == expected
        assert values_[row, : counts[row]].tolist() == [scores[row, c] for c in expected]


def test_kth_bound_is_at_most_the_kth_best_and_often_it() -> None:
    rng = np.random.default_rng(5)
    scores = rng.exponential(size=(500, 1000)).astype(np.float32)
    kth = np.sort(scores, axis=1)[:, -20]
    bound = _kth_bound(scores, 20)
    assert (bound <= kth).all()
    assert (bound == kth).mean() > 0.1


def test_chunks_and_threads_do_not_change_results(shared: Path) -> None:
    docs = seed_papers(shared)
    rng = random.Random(11)
    words = ["quantization", "LLM", "diffusion", "RLHF", "data", "mixture of experts", "agents"]
    profiles = [
        Profile(id=i, keywords=tuple(rng.sample(words, 3)), limit=rng.choice((1, 5, 20)))
        for i in range(500)
    ]
    index = Index.build(docs)
    one_chunk = [list(r) for _, r in index.rank(profiles, chunk=1000)]
    many_chunks = [list(r) for _, r in Index.build(docs).rank(iter(profiles), chunk=7)]
    assert one_chunk == many_chunks
    tiny_chunks = [list(r) for _, r in index.rank(profiles[:40], chunk=1)]
    assert tiny_chunks == one_chunk[:40]


def test_keywords_weighed_together_or_one_by_one_rank_alike(shared: Path) -> None:
    """New keywords are weighed in batches; the batch a keyword falls in changes nothing."""
    docs = seed_papers(shared)
    words = [w for d in docs for w in re.findall(r"[A-Za-z][a-z]{3,}", d.title)]
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    vocabulary = list(dict.fromkeys(["LLM", "RLHF", "mixture of experts", *words, *pairs]))
    assert len(vocabulary) > 600  # more than two batches of new concepts
    rng = random.Random(5)
    profiles = [
        Profile(id=i, keywords=tuple(rng.sample(vocabulary, 4)), limit=10) for i in range(300)
    ]
    together = Index.build(docs)
    one_by_one = Index.build(docs)
    for keyword in reversed(vocabulary):
        one_by_one._concept_ids([keyword])  # each keyword weighed alone, in another order
    first = [list(r) for _, r in together.rank(profiles, chunk=1000)]
    second = [list(r) for _, r in one_by_one.rank(profiles, chunk=1000)]
    assert first == second
    assert sum(map(len, first)) > 1000


@pytest.mark.parametrize(
    "text",
    [
        "State-of-the-art LLMs, as-is: pre-training (RLHF) and test-time adaptation.",
        "Schrödinger’s naïve e\u0301te\u0301 model — “quoted” · GPT-4 3D a-b-c-d-e-f-g",
        "of the and a",
        "",
        "...;;; -- x-- --y 中文 word's Mixture-of-Experts",
    ],
)
def test_the_index_tokenises_as_the_highlighter_does(text: str) -> None:
    # The index's fast loop and the generator behind highlighting must give one tokenisation.
    for base in (0, 1 << 20):
        tokens, words = _scan(text, base)
        into = _Positions()
        into.terms.append("earlier")  # a token already there stays first
        into.starts.append(7)
        into.ends.append(7)
        assert _index_tokens(text, base, into) == words
        assert list(zip(into.terms, into.starts, into.ends, strict=True)) == [
            ("earlier", 7, 7),
            *[t[:3] for t in tokens],
        ]


class _Watching:
    """A profile that notes whether the cyclic collector is on each time the ranker reads it."""

    def __init__(self, pid: int, states: list[bool]) -> None:
        self.id, self.limit, self.exclude, self.seen = pid, 2, ("eval",), frozenset({"b"})
        self._states = states

    @property
    def keywords(self) -> tuple[str, ...]:
        self._states.append(gc.isenabled())
        return ("diffusion", "protein")


def test_ranking_leaves_the_garbage_collector_alone() -> None:
    # Index.rank runs in digest serve's scheduler thread too: no process-wide tuning inside it.
    docs = [doc("a", "Diffusion for protein design"), doc("b", "Protein diffusion, again")]
    states: list[bool] = []
    for chunk in (1, 4096):  # several chunks (worker threads) and one
        ranked = Index.build(docs).rank([_Watching(i, states) for i in range(3)], chunk=chunk)  # type: ignore[list-item]
        assert [[r.key for r in row] for _, row in ranked] == [["a"]] * 3
    assert states and all(states)
    assert gc.isenabled()
