"""Rank an edition's papers for many readers in one vectorised pass, and explain every pick.

Pure: papers and profiles in, ranked and explained papers out; no clock, database or network.

How a pass works:

1. ``Index.build`` tokenises and stems every paper once per edition, keeping token positions so
   phrases can be found later. Tokens are lowercase unicode words; a hyphenated compound is indexed
   both as its parts and as the joined word ("pre-training" -> ``pre``, ``train`` and ``pretrain``),
   stopwords take no position (so "mixture of experts" ~ "mixture-of-experts" ~ "mixture experts"),
   and punctuation such as ``.`` ``,`` ``(`` breaks a phrase.
2. Every distinct keyword becomes a *concept*: the token sequences that count as a match (the
   keyword, its hyphen-split/joined forms, acronym <-> expansion from ``EQUIVALENTS``) plus its
   words ("units") for partial credit; a one-word acronym takes its expansion's words ("DPO":
   direct, preference, optimization). A concept's weights over the papers (and, for exclusions,
   the set of papers it matches) are computed the first time a profile uses it and cached on the
   index, so each concept costs one pass per edition whatever its readers.
3. Profiles are taken in chunks: a sparse profiles x concepts matrix times the dense float32
   concepts x papers weights gives every score at once; exclusions are a second product; seen
   papers a mask; a partition picks each row's top-k. That numeric part runs on a worker thread
   (numpy and scipy release the GIL) while the next chunk's keywords are looked up. Each reader
   gets a ``RankedList``: its ``Ranked`` objects and explanations are built on first read.

Score of a paper for a profile = the sum over the profile's keywords of

* the keyword itself: ``idf * (TITLE_WEIGHT * sat(tf_title) + sat(tf_abstract))`` with BM25
  saturation ``sat(tf) = tf (K1 + 1) / (tf + K1 (1 - b + b len / avglen))`` and BM25 idf over the
  edition's papers, so one title mention (2.5 x idf) beats any number of abstract mentions
  (< 2.2 x idf) for an ordinary title length. ``tf`` counts the phrase's occurrences, plus
  ``NEAR_WEIGHT`` for each place its words stand side by side in another order ("optimizing
  prompts" for "prompt optimization"). A passing mention -- once, in the abstract only, after its
  first third -- counts ``PASSING_WEIGHT`` (half);
* plus its words one by one: ``WORD_WEIGHT`` (0.15) times the mean of the words' own scores, each
  word's idf capped at the phrase's, so a paper with only a word of the keyword comes far below
  any paper with the phrase. A word inside another term of art does not count (the "mixture" of
  "data mixtures" is not found in "mixture of experts"), unless the keyword contains that term;

times an upvote tie-break ``1 + upvote_weight * log1p(upvotes)`` (default ``UPVOTE_WEIGHT`` =
0.002: +1% at 150 upvotes, so it only reorders papers within about 1% of each other; multiplying
keeps unmatched papers at 0 and folds into the concept weights, so it costs nothing per reader;
``Index.build(docs, upvote_weight=0)`` turns it off). Ties go to the smaller key. Scores are
float32, comparable within an edition only.

Each rule was kept for what it did to nDCG@20 on the judged set (tests/data/relevance; the log
is in its README's "Results"); bench/relevance.py measures it against plain BM25.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
import Stemmer

from digest.keywords import MAX_KEYWORD_CHARS, MAX_KEYWORDS

Field = Literal["title", "abstract"]

MAX_TEXT_CHARS = 50_000  # per title or abstract; the rest is neither ranked nor highlighted
MAX_KEYWORD_TOKENS = 12
MAX_VARIANTS = 32
MAX_COMPOUND_PARTS = 6  # longer hyphen chains are indexed as parts only

TITLE_WEIGHT = 2.5
K1 = 1.2
B_TITLE = 0.3
B_ABSTRACT = 0.75
WORD_WEIGHT = 0.15
NEAR_WEIGHT = 0.5
NEAR_SLOP = 0
PASSING_WEIGHT = 0.5
PASSING_AFTER = 1 / 3
UPVOTE_WEIGHT = 0.002

# Acronym <-> expansion equivalences: any form of a group matches the others, also inside a
# longer keyword ("LLM inference" ~ "large language model inference").
EQUIVALENTS: tuple[tuple[str, ...], ...] = (
    ("LLM", "large language model"),
    ("MLLM", "multimodal large language model", "multimodal LLM"),
    ("VLM", "vision-language model", "visual language model"),
    ("SLM", "small language model"),
    ("MoE", "mixture of experts"),
    ("RAG", "retrieval-augmented generation"),
    ("RLHF", "reinforcement learning from human feedback"),
    ("RL", "reinforcement learning"),
    ("ASR", "automatic speech recognition", "speech recognition"),
    ("NeRF", "neural radiance field"),
    ("ViT", "vision transformer"),
    ("KD", "knowledge distillation"),
    ("LoRA", "low-rank adaptation"),
    ("PEFT", "parameter-efficient fine-tuning"),
    ("SFT", "supervised fine-tuning"),
    ("DPO", "direct preference optimization"),
    ("PPO", "proximal policy optimization"),
    ("GRPO", "group relative policy optimization"),
    ("CoT", "chain of thought"),
    ("ICL", "in-context learning"),
    ("NLP", "natural language processing"),
    ("NLU", "natural language understanding"),
    ("NER", "named entity recognition"),
    ("QA", "question answering"),
    ("VQA", "visual question answering"),
    ("OCR", "optical character recognition"),
    ("NMT", "neural machine translation"),
    ("GNN", "graph neural network"),
    ("CNN", "convolutional neural network"),
    ("RNN", "recurrent neural network"),
    ("SNN", "spiking neural network"),
    ("PINN", "physics-informed neural network"),
    ("GAN", "generative adversarial network"),
    ("VAE", "variational autoencoder"),
    ("SAE", "sparse autoencoder"),
    ("MLP", "multilayer perceptron", "multi-layer perceptron"),
    ("SSM", "state space model"),
    ("NAS", "neural architecture search"),
    ("UDA", "unsupervised domain adaptation"),
    ("OOD", "out-of-distribution"),
    ("MCTS", "Monte Carlo tree search"),
    ("3DGS", "3D Gaussian splatting"),
    ("AGI", "artificial general intelligence"),
    ("AI", "artificial intelligence"),
    ("ML", "machine learning"),
)

# Function words take no position: phrases match across them ("mixture of experts").
_STOPWORD_TEXT = (
    "a an the of for in on to and or with from by via at as is are be been its it this that "
    "these those we our into than"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

# Stems that Porter2 merges across different ideas, or irregular plurals it misses.
_OVERRIDE_GROUPS: Mapping[str, str] = {
    "experiment": "experiment experiments experimental experimentally experimentation "
    "experimented experimenting",
    "transformer": "transformer transformers",
    "animation": "animation animations animate animated animating",
    "authority": "authority authorities",
    "emergency": "emergency emergencies",
    "natural": "natural naturally naturalness",
    "generaliz": "generalization generalizations generalize generalized generalizes "
    "generalizing generalizable generalizability",
    "reasonabl": "reasonable reasonably",
    "adapter": "adapter adapters adaptor adaptors",
    "index": "index indices indexes",
    "matrix": "matrix matrices",
    "vertex": "vertex vertices",
    "analyz": "analysis analyses analyze analyzed analyzes analyzing analyzer",
    "hypothesi": "hypothesis hypotheses",
    "serving": "serving servings",  # model serving, not "serves as"
    "gpu": "gpus",
    "cpu": "cpus",
    "tpu": "tpus",
}
_OVERRIDES = {word: stem for stem, words in _OVERRIDE_GROUPS.items() for word in words.split()}

# British -> American endings, applied to keywords and papers alike before stemming.
_BRITISH = (
    ("isations", "izations"),
    ("isation", "ization"),
    ("ising", "izing"),
    ("ised", "ized"),
    ("isers", "izers"),
    ("iser", "izer"),
    ("ises", "izes"),
    ("ise", "ize"),
    ("ysing", "yzing"),
    ("ysed", "yzed"),
    ("yses", "yzes"),
    ("yse", "yze"),
    ("ours", "ors"),
    ("our", "or"),
)
_TRUE_ISE_TEXT = (
    "precise concise otherwise promise premise surprise expertise exercise enterprise "
    "comprise compromise advise devise revise supervise televise improvise disguise "
    "franchise merchandise despise incise excise paradise treatise demise analyses"
)
_TRUE_ISE = frozenset(_TRUE_ISE_TEXT.split())


def _word_pattern(word_chars: str) -> str:
    return rf"{word_chars}(?:['\u2019]{word_chars})*"


def _scan_pattern(word: str) -> re.Pattern[str]:
    """A word or hyphen compound (group 1), or punctuation that breaks a phrase."""
    return re.compile(
        rf"({word}(?:[-\u2010\u2011]{word})*)|[.,;:!?()\[\]{{}}<>|\u2022\u00b7\u2014\"\u201c\u201d]"
    )


# letters and digits, with combining accents; an ASCII text takes the same patterns on plain
# ASCII classes, which Python's regex engine matches far faster than Unicode ones
_WORD = _word_pattern(r"(?:[^\W_]+|[\u0300-\u036f]+)+")
_WORD_RE = re.compile(_WORD)
_SCAN_RE = _scan_pattern(_WORD)
_ASCII_WORD = _word_pattern(r"[A-Za-z0-9]+")
_ASCII_WORD_RE = re.compile(_ASCII_WORD)
_ASCII_SCAN_RE = _scan_pattern(_ASCII_WORD)
_COMBINING_RE = re.compile(r"[\u0300-\u036f]")
_ACRONYM_PLURAL_RE = re.compile(r"[A-Z][A-Z0-9]+s")  # LLMs, GPUs
_CONSONANT_PLURAL_RE = re.compile(r"[bcdfghjklmnpqrstvwxz]{2,}s")  # llms, cnns

_DENSE_CELLS = 1 << 23  # the concepts x papers weights kept dense (float32) up to 32 MB
_KEYWORDS = operator.attrgetter("keywords")
_EXCLUDE = operator.attrgetter("exclude")
_SEEN = operator.attrgetter("seen")
_LIMIT = operator.attrgetter("limit")
_EXPLAINED_CACHE = 100_000  # (keyword, paper) -> matches, reused across readers; bounds memory
_ABSTRACT_BASE = 1 << 20  # abstract positions start here; titles never reach it
# an index's positions are global: ``doc << _DOC_SHIFT | position`` (texts are bounded far below)
_DOC_SHIFT = 32
_POSITION_MASK = (1 << _DOC_SHIFT) - 1
_FIELDS: tuple[Field, Field] = ("title", "abstract")

_local = threading.local()  # PyStemmer objects are not thread-safe

Variant = tuple[str, ...]
_Token = tuple[str, int, int, int, int]  # term, start pos, end pos, char start, char end


@dataclass(frozen=True, kw_only=True, slots=True)
class Doc:
    """A paper as ranking sees it."""

    key: str
    title: str
    abstract: str = ""
    upvotes: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """A reader's interests; ``seen`` holds paper keys already sent, which are never ranked."""

    id: int | str
    keywords: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    limit: int = 10
    seen: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True, slots=True)
class Match:
    """Why a paper was picked: a keyword found ``count`` times in a field.

    ``partial`` means the phrase itself was not found, only its words (``count`` of them).
    """

    keyword: str
    field: Field
    count: int
    partial: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Ranked:
    """A paper picked for a reader, with its score and the matches that explain it."""

    key: str
    score: float
    matches: tuple[Match, ...]

    def reason(self) -> str:
        """Say why, e.g. 'matched "quantization" in the title, "llm inference" in the abstract'."""
        fields: dict[str, list[str]] = {}
        partial: dict[str, bool] = {}
        for m in self.matches:
            fields.setdefault(m.keyword, []).append(m.field)
            partial[m.keyword] = m.partial
        parts = []
        for keyword, where in fields.items():
            label = f'words of "{keyword}"' if partial[keyword] else f'"{keyword}"'
            parts.append(f"{label} in the {' and '.join(where)}")
        return "matched " + ", ".join(parts) if parts else ""


@dataclass(frozen=True, slots=True)
class _Concept:
    """A compiled keyword: what counts as a match, and its words for partial credit."""

    key: str
    variants: tuple[Variant, ...]
    units: tuple[tuple[Variant, ...], ...]  # empty for one-word keywords


def _stemmer() -> Stemmer.Stemmer:
    stemmer: Stemmer.Stemmer | None = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return stemmer


def _normalise(raw: str) -> str:
    word = raw.lower()
    if not word.isascii():
        word = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", word)).replace("\u2019", "'")
    if word.endswith("'s"):
        word = word[:-2]
    return word.replace("'", "")


def _americanise(word: str) -> str:
    if len(word) < 6 or word in _TRUE_ISE or word.endswith("wise"):
        return word
    for british, american in _BRITISH:
        if word.endswith(british):
            if british.startswith("i") and len(word) < 7:
                return word
            return word[: -len(british)] + american
    return word


@lru_cache(maxsize=200_000)
def _term(word: str, acronym_plural: bool) -> str:
    """The index term of a normalised word: stemmed, but never merging different ideas."""
    if acronym_plural or _CONSONANT_PLURAL_RE.fullmatch(word):
        return word[:-1]
    override = _OVERRIDES.get(word)
    if override is not None:
        return override
    word = _americanise(word)
    override = _OVERRIDES.get(word)
    if override is not None:
        return override
    if len(word) <= 3 or not word.isalpha():
        return word  # short words and acronyms, "gpt4", "3d": stemming would only merge them
    stem: str = _stemmer().stemWord(word)
    return stem


@lru_cache(maxsize=200_000)
def _word_term(raw: str) -> str | None:
    """The term of a plain word as written, None for a stopword."""
    word = _normalise(raw)
    if not word or word in STOPWORDS:
        return None
    return _term(word, _ACRONYM_PLURAL_RE.fullmatch(raw) is not None)


def _compounds(
    text: str,
) -> Iterator[tuple[bool, list[tuple[str, int, int]], str | None, int, int]]:
    """Per word or hyphen compound: (punctuation before it, content parts, joined term, chars)."""
    broken = False
    ascii_text = text.isascii()
    word_re = _ASCII_WORD_RE if ascii_text else _WORD_RE
    scan_re = _ASCII_SCAN_RE if ascii_text else _SCAN_RE
    for found in scan_re.finditer(text, 0, MAX_TEXT_CHARS):
        raw = found.group(1)
        if raw is None:
            broken = True
            continue
        at = found.start()
        if raw.isalnum():  # the common case: a plain word
            term = _word_term(raw)
            if term is not None:
                yield broken, [(term, at, at + len(raw))], None, at, at + len(raw)
                broken = False
            continue
        parts, joined = _compound(raw, at, word_re)
        if parts or joined:
            yield broken, parts, joined, at, found.end()
            broken = False


def _compound(
    raw: str, at: int, word_re: re.Pattern[str]
) -> tuple[list[tuple[str, int, int]], str | None]:
    """A compound's content parts (term, chars from ``at``) and its joined term, if any."""
    parts: list[tuple[str, int, int]] = []
    norms: list[str] = []
    raws: list[str] = []
    for part in word_re.finditer(raw):
        piece = part.group()
        word = _normalise(piece)
        if not word:
            continue
        norms.append(word)
        raws.append(piece)
        if word not in STOPWORDS:
            start = at + part.start()
            term = _term(word, _ACRONYM_PLURAL_RE.fullmatch(piece) is not None)
            parts.append((term, start, start + len(piece)))
    joined = None
    if 2 <= len(norms) <= MAX_COMPOUND_PARTS:
        joined_raw = "".join(raws)
        joined = _term("".join(norms), _ACRONYM_PLURAL_RE.fullmatch(joined_raw) is not None)
    return parts, joined


def _index_tokens(text: str, base: int, into: _Positions) -> int:
    """``_scan`` for the index: each token's term, start and end appended to ``into``'s lists,
    without characters' offsets; returns the number of content words.

    The same tokens and positions, in one loop over the regex's words, without the
    generator's per-word overhead: it runs on every word of an edition.
    """
    ascii_text = text.isascii()
    word_re = _ASCII_WORD_RE if ascii_text else _WORD_RE
    scan_re = _ASCII_SCAN_RE if ascii_text else _SCAN_RE
    word_term = _word_term
    add_term, add_start, add_end = into.terms.append, into.starts.append, into.ends.append
    before = len(into.terms)
    pos = base
    joined_tokens = 0
    broken = False
    for raw in scan_re.findall(text, 0, MAX_TEXT_CHARS):  # "" for punctuation
        if not raw:
            broken = True
        elif raw.isalnum():
            term = word_term(raw)
            if term is not None:
                if broken:
                    pos += 1  # punctuation between words: no phrase across it
                    broken = False
                add_term(term)
                add_start(pos)
                add_end(pos)
                pos += 1
        else:
            parts, joined = _compound(raw, 0, word_re)
            if parts or joined:
                if broken:
                    pos += 1
                    broken = False
                first = pos
                for term, _, _ in parts:
                    add_term(term)
                    add_start(pos)
                    add_end(pos)
                    pos += 1
                if joined is not None:
                    if not parts:  # all parts were stopwords ("as-is"): the compound is one word
                        pos += 1
                    add_term(joined)
                    add_start(first)
                    add_end(pos - 1)
                    joined_tokens += 1
    # the joined terms are no words of their own
    return len(into.terms) - before - joined_tokens


def _scan(text: str, base: int) -> tuple[list[_Token], int]:
    """Tokens of ``text`` with positions from ``base``, and its number of content words."""
    tokens: list[_Token] = []
    pos = base
    words = 0
    for broken, parts, joined, char_start, char_end in _compounds(text):
        if broken:
            pos += 1  # punctuation between words: no phrase across it
        first = pos
        for term, start, end in parts:
            tokens.append((term, pos, pos, start, end))
            pos += 1
        words += len(parts)
        if joined is not None:
            if not parts:  # all parts were stopwords ("as-is"): the compound is one word
                pos += 1
            tokens.append((joined, first, pos - 1, char_start, char_end))
    return tokens, words


class _Postings:
    """term -> doc -> start position -> end positions, nested lazily for the terms queried."""

    def __init__(self) -> None:
        self._flat: dict[str, list[tuple[int, int, int]]] = {}
        self._nested: dict[str, dict[int, dict[int, tuple[int, ...]]]] = {}

    def add(self, doc: int, tokens: list[_Token]) -> None:
        flat = self._flat
        for term, start, end, _, _ in tokens:
            entry = flat.get(term)
            if entry is None:
                flat[term] = [(doc, start, end)]
            else:
                entry.append((doc, start, end))

    def get(self, term: str) -> dict[int, dict[int, tuple[int, ...]]] | None:
        nested = self._nested.get(term)
        if nested is None:
            flat = self._flat.get(term)
            if flat is None:
                return None
            nested = {}
            for doc, start, end in flat:
                # tuples and dicts of ints only: the garbage collector soon stops tracking them
                starts = nested.setdefault(doc, {})
                starts[start] = (*starts.get(start, ()), end)
            self._nested[term] = nested
        return nested


class _Positions:
    """An edition's postings as sorted arrays of global positions, built for the terms queried.

    A global position is ``doc << _DOC_SHIFT | position``, so one sorted array holds a term's
    occurrences in every paper, and a phrase, a window or a filter is a few array operations
    whatever the number of papers.

    Tokens are appended to three flat lists (``_index_tokens``), each paper's closed with
    ``end_doc``; the first ``get`` groups them by term with one sort, rather than a dict
    lookup per token as it comes.
    """

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self._doc_ends: list[int] = []  # where each paper's tokens end in the lists
        self._first: dict[str, int] = {}  # a term's first token: its key in _ids
        self._ids = self._starts = self._ends = _NO_POSITIONS
        self._arrays: dict[str, tuple[_IntArray, _IntArray]] = {}

    def end_doc(self) -> None:
        """The tokens appended since the last call are the next paper's."""
        self._doc_ends.append(len(self.terms))

    def _group(self) -> None:
        n = len(self.terms)
        # each token's term, named by the index of its first token (the C loop of map)
        ids = np.fromiter(map(self._first.setdefault, self.terms, range(n)), np.int64, count=n)
        doc_ends = np.array(self._doc_ends, dtype=np.int64)
        counts = doc_ends - np.concatenate([[0], doc_ends[:-1]])
        docs = np.repeat(np.arange(len(counts), dtype=np.int64) << _DOC_SHIFT, counts)
        order = np.argsort(ids, kind="stable")  # by term, then in the order added
        self._ids = ids[order]
        self._starts = (np.array(self.starts, dtype=np.int64) + docs)[order]
        self._ends = (np.array(self.ends, dtype=np.int64) + docs)[order]
        self.terms, self.starts, self.ends = [], [], []

    def get(self, term: str) -> tuple[_IntArray, _IntArray]:
        """(starts, ends) of a term's occurrences, sorted by start then end."""
        arrays = self._arrays.get(term)
        if arrays is None:
            if self.terms:
                self._group()
            first = self._first.get(term)
            if first is None:
                s = e = _NO_POSITIONS
            else:
                lo, hi = np.searchsorted(self._ids, (first, first + 1))
                s, e = self._starts[lo:hi], self._ends[lo:hi]
                if len(s) > 1 and not (np.all(s[1:] > s[:-1])):
                    order = np.lexsort((e, s))
                    s, e = s[order], e[order]
            arrays = self._arrays[term] = (s, e)
        return arrays

    def chain(self, variant: Variant) -> tuple[_IntArray, _IntArray]:
        """(starts, ends) of the places where ``variant``'s terms occur one after another."""
        if not variant:
            return _NO_POSITIONS, _NO_POSITIONS
        starts, ends = self.get(variant[0])
        for term in variant[1:]:
            if not len(starts):
                break
            next_starts, next_ends = self.get(term)
            lo = np.searchsorted(next_starts, ends + 1, side="left")
            hi = np.searchsorted(next_starts, ends + 1, side="right")
            found = hi - lo
            if found.max(initial=0) <= 1:
                hit = found == 1
                starts, ends = starts[hit], next_ends[lo[hit]]
            else:  # a term starting twice at one place (a compound and its first part)
                starts = np.repeat(starts, found)
                ends = next_ends[_expand_ranges(lo, hi - 1)]
        return starts, ends


def _expand_ranges(first: _IntArray, last: _IntArray) -> _IntArray:
    """Every integer of the inclusive ranges ``first[i]..last[i]``, concatenated."""
    sizes = last - first + 1
    if not len(sizes):
        return _NO_POSITIONS
    offsets = np.repeat(first - np.cumsum(sizes) + sizes, sizes)
    return offsets + np.arange(int(sizes.sum()), dtype=np.int64)


def _sorted_unique(values: _IntArray) -> _IntArray:
    """``np.unique(values)``: sorted, each once, by sorting: numpy 2.4's ``unique`` finds them
    with a hash table, far slower on these position arrays."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _contains(sorted_values: _IntArray, values: _IntArray) -> npt.NDArray[np.bool_]:
    """For each of ``values``: whether it is in ``sorted_values``."""
    i = np.searchsorted(sorted_values, values)
    i[i == len(sorted_values)] = 0
    found: npt.NDArray[np.bool_] = sorted_values[i] == values
    return found


def _chain(postings: _Postings, variant: Variant) -> dict[int, set[tuple[int, int]]]:
    """Where ``variant``'s terms occur consecutively: doc -> {(start, end)}."""
    lists = [postings.get(term) for term in variant]
    if not lists:
        return {}
    present = [p for p in lists if p is not None]
    if len(present) < len(lists):
        return {}
    docs = set(min(present, key=len)).intersection(*present)  # type: ignore[arg-type]
    found: dict[int, set[tuple[int, int]]] = {}
    first, rest = present[0], present[1:]
    for doc in docs:
        spans = [(start, end) for start, ends in first[doc].items() for end in ends]
        for postings_of_term in rest:
            after = postings_of_term[doc]
            spans = [(start, e2) for start, end in spans for e2 in after.get(end + 1, ())]
            if not spans:
                break
        if spans:
            found[doc] = set(spans)
    return found


def _occurrences(
    postings: _Postings, variants: Sequence[Variant]
) -> dict[int, set[tuple[int, int]]]:
    found: dict[int, set[tuple[int, int]]] = {}
    for variant in variants:
        for doc, spans in _chain(postings, variant).items():
            found.setdefault(doc, set()).update(spans)
    return found


@lru_cache(maxsize=1)
def _art_phrases() -> tuple[tuple[Variant, ...], ...]:
    """The multi-word forms of each equivalence group that has some: the terms of art."""
    groups, _ = _equivalence_table()
    phrases = (tuple(form for form in forms if len(form) >= 2) for forms in groups)
    return tuple(forms for forms in phrases if forms)


@lru_cache(maxsize=100_000)
def _own_terms(concept: _Concept) -> frozenset[int]:
    """The terms of art (indices into ``_art_phrases``) that a keyword itself contains."""
    own = {piece for variant in concept.variants for piece in _subsequences(variant)}
    return frozenset(i for i, forms in enumerate(_art_phrases()) if own.intersection(forms))


def _subsequences(variant: Variant) -> Iterator[Variant]:
    for length in range(1, len(variant) + 1):
        for at in range(len(variant) - length + 1):
            yield variant[at : at + length]


@lru_cache(maxsize=1)
def _equivalence_table() -> tuple[tuple[tuple[Variant, ...], ...], dict[Variant, list[int]]]:
    groups: list[tuple[Variant, ...]] = []
    where: dict[Variant, list[int]] = {}
    for forms in EQUIVALENTS:
        seqs: list[Variant] = []
        for form in forms:
            for seq in _literal_variants(form):
                if seq not in seqs:
                    seqs.append(seq)
        for seq in seqs:
            where.setdefault(seq, []).append(len(groups))
        groups.append(tuple(seqs))
    return tuple(groups), where


def _literal_variants(text: str) -> list[Variant]:
    """Token sequences of ``text`` itself: each hyphen compound as parts or joined."""
    units = _units(text)
    variants: list[Variant] = []
    for combo in itertools.product(*units):
        variant = tuple(term for piece in combo for term in piece)
        if variant and variant not in variants:
            variants.append(variant)
        if len(variants) >= MAX_VARIANTS:
            break
    return variants


def _units(text: str) -> list[list[Variant]]:
    """Per content word or compound of ``text``: its alternative token sequences."""
    units: list[list[Variant]] = []
    for _, parts, joined, _, _ in _compounds(text[:MAX_KEYWORD_CHARS]):
        alternatives: list[Variant] = []
        if parts:
            alternatives.append(tuple(term for term, _, _ in parts))
        if joined is not None and (joined,) not in alternatives:
            alternatives.append((joined,))
        units.append(alternatives)
        if len(units) >= MAX_KEYWORD_TOKENS:
            break
    return units


def _expand(variants: list[Variant]) -> list[Variant]:
    """Add the acronym/expansion substitutes of every equivalence form inside each variant."""
    groups, where = _equivalence_table()
    out = list(variants)
    i = 0
    while i < len(out) and len(out) < MAX_VARIANTS:
        variant = out[i]
        i += 1
        for length in range(1, len(variant) + 1):
            for at in range(len(variant) - length + 1):
                piece = variant[at : at + length]
                for group in where.get(piece, ()):
                    for other in groups[group]:
                        new = variant[:at] + other + variant[at + length :]
                        if new not in out and len(out) < MAX_VARIANTS:
                            out.append(new)
    return out


@lru_cache(maxsize=100_000)
def _compile(keyword: str) -> _Concept | None:
    """Compile a keyword into a concept, or None when it has no content words."""
    units = _units(keyword[:MAX_KEYWORD_CHARS])
    if not units:
        return None
    variants = _expand(_literal_variants(keyword[:MAX_KEYWORD_CHARS]))
    unit_variants: tuple[tuple[Variant, ...], ...] = ()
    if len(units) == 1:
        # an acronym is the same keyword as its expansion: it gets the expansion's words too
        units = _expansion_units(units[0]) or units
    if len(units) >= 2:
        unit_variants = tuple(tuple(_expand(list(unit))) for unit in units)
    key = repr((sorted(variants), sorted(sorted(u) for u in unit_variants)))
    return _Concept(key=key, variants=tuple(variants), units=unit_variants)


def _expansion_units(alternatives: list[Variant]) -> list[list[Variant]]:
    """The words of the longest equivalent form of a one-word keyword, if it has one."""
    groups, where = _equivalence_table()
    forms = [form for alt in alternatives for g in where.get(alt, ()) for form in groups[g]]
    longest = max(forms, key=len, default=())
    if len(longest) < 2:
        return []
    return [[(term,)] for term in longest]


_IntArray = npt.NDArray[np.int64]
_FloatArray = npt.NDArray[np.float64]
_F32Array = npt.NDArray[np.float32]
_NO_POSITIONS: _IntArray = np.zeros(0, dtype=np.int64)
_CONCEPT_BATCH = 256  # new concepts weighed together (a few (batch x papers) float arrays)


class Index:
    """An edition's papers, tokenised once, ready to rank any number of profiles."""

    def __init__(
        self,
        *,
        keys: list[str],
        positions: _Positions,
        title_len: _FloatArray,
        abstract_len: _FloatArray,
        boost: _FloatArray,
        abstract_span: _FloatArray | None = None,
    ) -> None:
        self.keys = keys
        self._positions = positions
        self._key_index = {key: i for i, key in enumerate(keys)}
        n = len(keys)
        self._n = n
        title_avg = float(title_len.mean()) if n else 1.0
        abstract_avg = float(abstract_len.mean()) if n else 1.0
        self._title_norm = 1 - B_TITLE + B_TITLE * title_len / max(title_avg, 1e-9)
        self._abstract_norm = 1 - B_ABSTRACT + B_ABSTRACT * abstract_len / max(abstract_avg, 1e-9)
        self._boost = boost
        self._abstract_span = abstract_len if abstract_span is None else abstract_span
        self._kw_cid: dict[str, int] = {}
        self._key_cid: dict[str, int] = {}
        # per concept, aligned with its weights' nonzeros: phrase and word counts by field
        self._details: list[_IntArray] = []
        self._fields: _IntArray = np.zeros((0, 4), dtype=np.int64)
        self._explained: dict[tuple[str, int], tuple[Match, ...]] = {}
        self._span_cache: dict[tuple[Variant, ...], _IntArray] = {}
        self._art: tuple[_IntArray, _IntArray] | None = None  # covered positions, their terms
        self._blocked_cache: dict[frozenset[int], _IntArray] = {}
        self._free_cache: dict[tuple[tuple[Variant, ...], frozenset[int]], _IntArray] = {}
        self._w_rows: list[tuple[_IntArray, _FloatArray]] = []
        self._x_rows: list[_IntArray] = []
        self._nonzero: _IntArray = np.zeros(0, dtype=np.int64)
        self._wt: Any = None
        self._dense: _F32Array | None = None
        self._xt: Any = None
        self._built_rows = 0

    @classmethod
    def build(cls, docs: Sequence[Doc], *, upvote_weight: float = UPVOTE_WEIGHT) -> Index:
        """Tokenise and stem an edition's papers (duplicate keys: the first one wins)."""
        unique: dict[str, Doc] = {}
        for doc in docs:
            unique.setdefault(doc.key, doc)
        keys = sorted(unique)
        positions = _Positions()
        title_len = np.zeros(len(keys))
        abstract_len = np.zeros(len(keys))
        abstract_span = np.zeros(len(keys))
        boost = np.ones(len(keys))
        for i, key in enumerate(keys):
            doc = unique[key]
            title_len[i] = _index_tokens(doc.title, 0, positions)
            in_title = len(positions.terms)
            abstract_len[i] = _index_tokens(doc.abstract, _ABSTRACT_BASE, positions)
            if len(positions.terms) > in_title:
                abstract_span[i] = positions.ends[-1] - _ABSTRACT_BASE + 1
            positions.end_doc()
            if doc.upvotes:
                boost[i] += upvote_weight * math.log1p(max(doc.upvotes, 0))
        return cls(
            keys=keys,
            positions=positions,
            title_len=title_len,
            abstract_len=abstract_len,
            boost=boost,
            abstract_span=abstract_span,
        )

    def __len__(self) -> int:
        return self._n

    def rank(
        self, profiles: Iterable[Profile], *, chunk: int = 4096
    ) -> Iterator[tuple[Profile, RankedList]]:
        """Rank every profile, streaming ``(profile, ranked)`` in input order, chunk by chunk.

        While one chunk's scores and top-k are computed on a worker thread (numpy and scipy
        release the GIL there), the next chunk's keywords are looked up on this one.
        """
        it = iter(profiles)
        size = max(chunk, 1)
        batch = list(itertools.islice(it, size))
        if len(batch) < size:  # one chunk: nothing to overlap
            if batch:
                yield from zip(batch, self._finish(self._prepare(batch)), strict=True)
            return
        # two workers, each on half of a chunk's rows: with this thread's Python work, that
        # keeps both cores of a small machine busy
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="rank") as pool:
            pending: tuple[list[Profile], _Prepared, list[Future[_Picked]]] | None = None
            while batch:
                prepared = self._prepare(batch)
                futures = [pool.submit(_pick, half) for half in _halves(prepared)]
                if pending is not None:
                    yield from self._finished(*pending)
                pending = (batch, prepared, futures)
                batch = list(itertools.islice(it, size))
            if pending is not None:
                yield from self._finished(*pending)

    def _finished(
        self, batch: list[Profile], prepared: _Prepared, futures: list[Future[_Picked]]
    ) -> Iterator[tuple[Profile, RankedList]]:
        parts = [future.result() for future in futures]
        picked = (
            np.concatenate([best for best, _, _ in parts]),
            np.concatenate([values for _, values, _ in parts]),
            np.concatenate([counts for _, _, counts in parts]),
        )
        return zip(batch, self._finish(prepared, picked), strict=True)

    # concepts

    def _concept_ids(self, keywords: Iterable[str]) -> dict[str, int]:
        """Concept ids of keywords (-1: no content words), new concepts added together."""
        ids: dict[str, int] = {}
        new: dict[str, _Concept] = {}  # by key, in the order first met
        for keyword in keywords:
            if keyword in ids:
                continue
            cid = self._kw_cid.get(keyword)
            if cid is None:
                concept = _compile(keyword)
                if concept is None:
                    cid = -1
                else:
                    cid = self._key_cid.get(concept.key)
                    if cid is None:
                        new.setdefault(concept.key, concept)
                        cid = -2  # set below
            ids[keyword] = cid
        for start in range(0, len(new), _CONCEPT_BATCH):
            self._add_concepts(list(new.values())[start : start + _CONCEPT_BATCH])
        for keyword, cid in ids.items():
            if cid == -2:
                concept = _compile(keyword)
                assert concept is not None
                ids[keyword] = self._key_cid[concept.key]
            if len(self._kw_cid) < 1_000_000:
                self._kw_cid[keyword] = ids[keyword]
        return ids

    def _spans(self, variants: tuple[Variant, ...]) -> _IntArray:
        """Sorted global start positions (``doc << _DOC_SHIFT | position``) of ``variants``."""
        spans = self._span_cache.get(variants)
        if spans is None:
            found = [self._positions.chain(variant)[0] for variant in variants]
            if len(found) == 1 and bool(np.all(found[0][1:] > found[0][:-1])):
                spans = found[0]  # one variant, each start once: already sorted and unique
            else:
                spans = _sorted_unique(np.concatenate(found)) if found else _NO_POSITIONS
            self._span_cache[variants] = spans
        return spans

    def _blocked(self, own: frozenset[int]) -> _IntArray:
        """Sorted global positions covered by a term of art other than those in ``own``."""
        blocked = self._blocked_cache.get(own)
        if blocked is None:
            if self._art is None:
                covered: list[_IntArray] = []
                covering: list[_IntArray] = []
                for term, forms in enumerate(_art_phrases()):
                    spans = [self._positions.chain(form) for form in forms]
                    starts = np.concatenate([s for s, _ in spans])
                    ends = np.concatenate([e for _, e in spans])
                    covered.append(_expand_ranges(starts, ends))
                    covering.append(np.full(len(covered[-1]), term, dtype=np.int64))
                self._art = (np.concatenate(covered), np.concatenate(covering))
            positions, terms = self._art
            if own:
                positions = positions[~np.isin(terms, list(own))]
            blocked = _sorted_unique(positions)
            self._blocked_cache[own] = blocked
        return blocked

    def _free_spans(self, unit: tuple[Variant, ...], concept: _Concept) -> _IntArray:
        """Where a keyword's word occurs outside any other term of art: the "mixture" of
        "data mixtures" is not found in "mixture of experts", nor "adaptation" in "low-rank
        adaptation" (unless the keyword itself contains that term)."""
        own = _own_terms(concept)
        cached = self._free_cache.get((unit, own))
        if cached is None:
            starts = self._spans(unit)
            blocked = self._blocked(own)
            if len(starts) and len(blocked):
                starts = starts[~_contains(blocked, starts)]
            cached = self._free_cache[(unit, own)] = starts
        return cached

    def _near(self, units: list[_IntArray], slop: int) -> tuple[_FloatArray, _FloatArray]:
        """Per paper, the (title, abstract) count of places where every unit occurs within a
        short window.

        Anchored, in each paper, on the unit with the fewest occurrences there (the first of
        them on a tie): each other unit must start within ``len(units) - 1 + slop`` positions of
        it, either side, in the same field.
        """
        n = self._n
        title, abstract = np.zeros(n), np.zeros(n)
        if not units or any(not len(u) for u in units):
            return title, abstract
        counts = np.stack([np.bincount(u >> _DOC_SHIFT, minlength=n) for u in units])
        anchor = np.argmin(counts, axis=0)
        anchor[(counts == 0).any(axis=0)] = -1
        reach = len(units) - 1 + slop
        for j, positions in enumerate(units):
            at = positions[anchor[positions >> _DOC_SHIFT] == j]
            for k, other in enumerate(units):
                if k == j or not len(at):
                    continue
                i = np.searchsorted(other, at - reach)
                ok = i < len(other)
                ok[ok] = other[i[ok]] <= at[ok] + reach
                at = at[ok]
            if len(at):
                docs = at >> _DOC_SHIFT
                in_abstract = (at & _POSITION_MASK) >= _ABSTRACT_BASE
                title += np.bincount(docs[~in_abstract], minlength=n)
                abstract += np.bincount(docs[in_abstract], minlength=n)
        return title, abstract

    def _idf(self, df: int) -> float:
        return math.log(1.0 + (self._n - df + 0.5) / (df + 0.5))

    def _weights(self, title: _FloatArray, abstract: _FloatArray, docs: _IntArray) -> _FloatArray:
        """Field-weighted BM25 saturation of term frequencies in papers ``docs``, times their
        upvote boost."""
        k1 = K1
        return (
            TITLE_WEIGHT * title * (k1 + 1) / (title + k1 * self._title_norm[docs])
            + abstract * (k1 + 1) / (abstract + k1 * self._abstract_norm[docs])
        ) * self._boost[docs]

    def _field_counts(
        self, rows: list[_IntArray], *, first: bool = True
    ) -> tuple[_FloatArray, _FloatArray, _FloatArray]:
        """Per phrase (its global start positions, sorted) and paper: occurrences in the title,
        in the abstract, and the first abstract position (``inf`` where there is none, or when
        not asked for), as (phrases x papers) arrays."""
        k, n = len(rows), self._n
        lens = [len(starts) for starts in rows]
        starts = np.concatenate(rows) if rows else _NO_POSITIONS
        cells = np.repeat(np.arange(k, dtype=np.int64), lens) * n + (starts >> _DOC_SHIFT)
        local = starts & _POSITION_MASK
        in_abstract = local >= _ABSTRACT_BASE
        title = np.bincount(cells[~in_abstract], minlength=k * n).astype(np.float64)
        abstract_cells = cells[in_abstract]
        abstract = np.bincount(abstract_cells, minlength=k * n).astype(np.float64)
        first_at = np.full(k * n, np.inf)
        if first and len(abstract_cells):
            # sorted by phrase, then position: a cell's first abstract start leads its run
            lead = np.flatnonzero(np.diff(abstract_cells, prepend=-1))
            first_at[abstract_cells[lead]] = local[in_abstract][lead] - _ABSTRACT_BASE
        return title.reshape(k, n), abstract.reshape(k, n), first_at.reshape(k, n)

    def _add_concepts(self, concepts: list[_Concept]) -> None:
        """Weigh every paper for each concept, all the concepts in one pass of array operations.

        Counted on (concepts x papers) arrays, then weighed only on the cells where something
        was found (few of them), cell by cell as on the whole arrays.
        """
        k, n = len(concepts), self._n
        if not k:
            return
        title, abstract, first = self._field_counts([self._spans(c.variants) for c in concepts])
        unit_spans = [[self._free_spans(unit, c) for unit in c.units] for c in concepts]
        near_title, near_abstract = np.zeros((k, n)), np.zeros((k, n))
        for i, spans in enumerate(unit_spans):
            if spans:
                near_title[i], near_abstract[i] = self._near(spans, NEAR_SLOP)
        # its words one by one: the cells (unit by unit, in each concept's order) they occur in
        counts = np.array([len(spans) for spans in unit_spans], dtype=np.int64)
        owner = np.repeat(np.arange(k), counts)
        unit_rows = unit_docs = _NO_POSITIONS
        unit_title = unit_abstract = np.zeros(0)
        if counts.any():
            ut, ua, _ = self._field_counts([s for spans in unit_spans for s in spans], first=False)
            unit_rows, unit_docs = np.nonzero(ut + ua)
            unit_title, unit_abstract = ut[unit_rows, unit_docs], ua[unit_rows, unit_docs]
        unit_cells = owner[unit_rows] * n + unit_docs
        cells = _sorted_unique(
            np.concatenate(
                [np.flatnonzero(title + abstract + near_title + near_abstract), unit_cells]
            )
        )
        rows, docs = cells // n, cells % n
        title, abstract, first = title.ravel()[cells], abstract.ravel()[cells], first.ravel()[cells]
        near_title, near_abstract = near_title.ravel()[cells], near_abstract.ravel()[cells]
        in_phrase = (title + abstract) > 0
        found = np.bincount(rows[in_phrase | ((near_title + near_abstract) > 0)], minlength=k)
        idf = np.array([self._idf(df) for df in found.tolist()])
        # the keyword itself: phrase occurrences, plus its words side by side in another order
        pt = title + NEAR_WEIGHT * np.maximum(near_title - title, 0.0)
        pa = abstract + NEAR_WEIGHT * np.maximum(near_abstract - abstract, 0.0)
        weights = idf[rows] * self._weights(pt, pa, docs)
        # a passing mention: once, in the abstract only, past its first third
        passing = (
            in_phrase & (pt == 0) & (pa <= 1) & (first > PASSING_AFTER * self._abstract_span[docs])
        )
        weights[passing] *= PASSING_WEIGHT
        # its words one by one: a low tier under any phrase match, each capped at the phrase's idf
        word_title, word_abstract = np.zeros(len(cells)), np.zeros(len(cells))
        if len(unit_cells):
            unit_df = np.bincount(unit_rows, minlength=len(owner)).tolist()
            unit_idf = np.minimum([self._idf(df) for df in unit_df], idf[owner])
            at = np.searchsorted(cells, unit_cells)
            # summed unit by unit in each concept's order (bincount adds in input order), as
            # one concept at a time would
            words = np.bincount(
                at,
                weights=unit_idf[unit_rows] * self._weights(unit_title, unit_abstract, unit_docs),
                minlength=len(cells),
            )
            # bincount with weights gives floats (its type stubs say ints)
            word_title = np.bincount(at, unit_title, len(cells)).astype(np.float64, copy=False)
            word_abstract = np.bincount(at, unit_abstract, len(cells)).astype(
                np.float64, copy=False
            )
            with_units = counts[rows] > 0
            weights[with_units] += WORD_WEIGHT * words[with_units] / counts[rows[with_units]]
        kept = weights > 0
        rows, docs, values = rows[kept], docs[kept], weights[kept]
        fields = np.stack(
            [title[kept], abstract[kept], word_title[kept], word_abstract[kept]], axis=1
        ).astype(np.int64)
        x_rows, x_docs = cells[in_phrase] // n, cells[in_phrase] % n
        bounds = np.cumsum(np.bincount(rows, minlength=k))[:-1]
        x_bounds = np.cumsum(np.bincount(x_rows, minlength=k))[:-1]
        for concept, d, w, f, x in zip(
            concepts,
            np.split(docs, bounds),
            np.split(values, bounds),
            np.split(fields, bounds),
            np.split(x_docs, x_bounds),
            strict=True,
        ):
            self._w_rows.append((d, w))
            self._x_rows.append(x)
            self._details.append(f)
            self._key_cid[concept.key] = len(self._details) - 1

    def _matrices(self) -> tuple[Any, Any, _IntArray, _F32Array | None]:
        """The concepts x papers weights (sparse, and dense float32 while small), exclusions,
        and sorted ``concept * n + paper`` keys of the weights' nonzeros, grown to the current
        vocabulary."""
        n_rows = len(self._w_rows)
        if self._wt is None or self._built_rows < n_rows:
            wt = _csr_rows(
                [docs for docs, _ in self._w_rows], [w for _, w in self._w_rows], self._n
            )
            self._wt = wt
            self._xt = _csr_rows(self._x_rows, None, self._n)
            rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(wt.indptr))
            self._nonzero = rows * self._n + wt.indices
            self._fields = np.concatenate(self._details) if self._details else self._fields
            self._dense = None
            if n_rows * self._n <= _DENSE_CELLS:
                # filled in place: each (concept, paper) is in wt once, and toarray would go
                # through a float64 copy of the whole block
                self._dense = np.zeros((n_rows, self._n), dtype=np.float32)
                self._dense[rows, wt.indices] = wt.data
            self._built_rows = n_rows
        return self._wt, self._xt, self._nonzero, self._dense

    # ranking

    def _prepare(self, batch: list[Profile]) -> _Prepared:
        """A chunk's profiles as arrays: concepts, limits, exclusions and seen papers."""
        n = self._n
        m = len(batch)
        keywords, indptr, cids = self._chunk_concepts(list(map(_KEYWORDS, batch)))
        limits = np.fromiter(map(int, map(_LIMIT, batch)), dtype=np.int64, count=m)
        np.clip(limits, 0, n, out=limits)
        excluded = None
        exclude = list(map(_EXCLUDE, batch))
        if any(exclude):
            _, ex_indptr, ex_cids = self._chunk_concepts(exclude)
            excluded = (ex_indptr, ex_cids)
        seen = list(map(_SEEN, batch))
        seen_lens = list(map(len, seen))
        seen_rows = seen_cols = np.zeros(0, dtype=np.int64)
        if any(seen_lens):
            get = self._key_index.get
            cols = list(map(get, itertools.chain.from_iterable(seen), itertools.repeat(-1)))
            seen_rows = np.repeat(np.arange(m, dtype=np.int64), seen_lens)
            seen_cols = np.array(cols, dtype=np.int64)
            known = seen_cols >= 0
            seen_rows, seen_cols = seen_rows[known], seen_cols[known]
        wt, xt, _, dense = self._matrices()
        return _Prepared(
            keywords=keywords,
            indptr=indptr,
            cids=cids,
            limits=limits,
            top=int(limits.max(initial=0)),
            excluded=excluded,
            seen_rows=seen_rows,
            seen_cols=seen_cols,
            wt=wt,
            xt=xt,
            dense=dense,
        )

    def _finish(self, prepared: _Prepared, picked: _Picked | None = None) -> list[RankedList]:
        """The chunk's results, one lazily built list per profile."""
        if picked is None:
            picked = _pick(prepared)
        best, values, counts = picked
        chunk = _Chunk(
            self, prepared.keywords, prepared.indptr, prepared.cids, best, values, counts
        )
        empty = RankedList.empty()
        return [
            RankedList(chunk, row, count) if count else empty
            for row, count in enumerate(counts.tolist())
        ]

    def _chunk_concepts(
        self, keyword_lists: list[tuple[str, ...]]
    ) -> tuple[list[str], _IntArray, _IntArray]:
        """Keywords, CSR row pointers and concept ids of many profiles' keyword lists.

        Each list is bounded to MAX_KEYWORDS and keeps the first keyword of each concept, in
        the profile's own order: explanations follow it, and float sums, taken in it, come out
        the same whatever chunk the profile is ranked in. One dict lookup per keyword; the rest
        is done on arrays.
        """
        lists: list[tuple[str, ...]] = keyword_lists
        if set(map(type, lists)) != {tuple} or max(map(len, lists)) > MAX_KEYWORDS:
            lists = [tuple(itertools.islice(kws, MAX_KEYWORDS)) for kws in lists]
        lens = list(map(len, lists))
        keywords = list(itertools.chain.from_iterable(lists))
        flat: list[int | None] = list(map(self._kw_cid.get, keywords))
        if None in flat:  # keywords met for the first time: compile them
            ids = self._concept_ids(k for k, c in zip(keywords, flat, strict=True) if c is None)
            flat = [ids[k] if c is None else c for k, c in zip(keywords, flat, strict=True)]
        cids = np.array(flat, dtype=np.int64)
        rows = np.repeat(np.arange(len(lists), dtype=np.int64), lens)
        # keep the first keyword of each (profile, concept), and none without content
        _, first = np.unique(rows * (len(self._details) + 1) + cids, return_index=True)
        keep = np.zeros(len(cids), dtype=bool)
        keep[first] = True
        keep &= cids >= 0
        if not keep.all():
            keywords = list(itertools.compress(keywords, keep.tolist()))
            cids, rows = cids[keep], rows[keep]
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(lists)), out=indptr[1:])
        return keywords, indptr, cids

    def _explain(
        self,
        keywords: list[str],
        indptr: _IntArray,
        cids: _IntArray,
        best: _IntArray,
        counts: _IntArray,
    ) -> list[tuple[Match, ...]]:
        """The matches of every returned (profile, paper) pair, row by row, best first."""
        k = best.shape[1]
        picked = np.arange(k) < counts[:, None]
        pair_row = np.nonzero(picked)[0]
        pair_doc = best[picked]
        # every (pair, concept of its profile), then which of those concepts match the paper
        lens = np.diff(indptr)[pair_row]
        entry_pair = np.repeat(np.arange(len(pair_row)), lens)
        entry_pos = np.arange(int(lens.sum())) + np.repeat(
            indptr[pair_row] - (np.cumsum(lens) - lens), lens
        )
        query = cids[entry_pos] * self._n + pair_doc[entry_pair]
        _, _, nonzero, _ = self._matrices()
        where = np.minimum(np.searchsorted(nonzero, query), max(len(nonzero) - 1, 0))
        hit = nonzero[where] == query if len(nonzero) else np.zeros(len(query), dtype=bool)
        fields: list[list[int]] = self._fields[where[hit]].tolist()
        docs = pair_doc.tolist()
        cache = self._explained
        explanations: list[tuple[Match, ...]] = [()] * len(docs)
        for pair, pos, in_fields in zip(
            entry_pair[hit].tolist(), entry_pos[hit].tolist(), fields, strict=True
        ):
            keyword, doc = keywords[pos], docs[pair]
            found = cache.get((keyword, doc))
            if found is None:
                if len(cache) >= _EXPLAINED_CACHE:
                    cache.clear()
                found = cache[(keyword, doc)] = _matches(keyword, in_fields)
            explanations[pair] += found
        return explanations


def _matches(keyword: str, counts: list[int]) -> tuple[Match, ...]:
    """A keyword's matches in a paper from its (phrase, phrase, words, words) field counts."""
    title, abstract, word_title, word_abstract = counts
    if title or abstract:
        return tuple(
            Match(keyword=keyword, field=field, count=n)
            for field, n in zip(_FIELDS, (title, abstract), strict=True)
            if n
        )
    return tuple(
        Match(keyword=keyword, field=field, count=n, partial=True)
        for field, n in zip(_FIELDS, (word_title, word_abstract), strict=True)
        if n
    )


class _Chunk:
    """A chunk's results as compact arrays; explanations are worked out when first read."""

    __slots__ = (
        "_index",
        "_keywords",
        "_indptr",
        "_cids",
        "_best",
        "_values",
        "_counts",
        "_rows",
        "_lock",
    )

    def __init__(
        self,
        index: Index,
        keywords: list[str],
        indptr: _IntArray,
        cids: _IntArray,
        best: _IntArray,
        values: _F32Array,
        counts: _IntArray,
    ) -> None:
        self._index = index
        self._keywords = keywords
        self._indptr = indptr
        self._cids = cids
        self._best = best
        self._values = values
        self._counts = counts
        self._rows: list[list[Ranked]] | None = None
        self._lock = threading.Lock()

    def row(self, row: int) -> list[Ranked]:
        """The Ranked objects of one profile, best first (the chunk's are all built at once)."""
        with self._lock:
            if self._rows is None:
                self._rows = self._build()
        return self._rows[row]

    def _build(self) -> list[list[Ranked]]:
        explanations = self._index._explain(
            self._keywords, self._indptr, self._cids, self._best, self._counts
        )
        keys = self._index.keys
        out: list[list[Ranked]] = []
        at = 0
        for docs, values, count in zip(
            self._best.tolist(), self._values.tolist(), self._counts.tolist(), strict=True
        ):
            out.append(
                [
                    Ranked(key=keys[doc], score=score, matches=explanations[at + j])
                    for j, (doc, score) in enumerate(zip(docs[:count], values[:count], strict=True))
                ]
            )
            at += count
        return out


class RankedList(Sequence[Ranked]):
    """One reader's ranked papers, best first: a read-only sequence of :class:`Ranked`.

    The ranking is done when it is made; the ``Ranked`` objects and their explanations are built
    the first time it is read, so a pass over many readers makes few Python objects.
    """

    __slots__ = ("_chunk", "_row", "_len", "_items")

    def __init__(self, chunk: _Chunk | None, row: int, length: int) -> None:
        self._chunk = chunk
        self._row = row
        self._len = length
        self._items: list[Ranked] | None = None if length else []

    @classmethod
    def empty(cls) -> RankedList:
        """A list with nothing in it."""
        return cls(None, 0, 0)

    def _list(self) -> list[Ranked]:
        items = self._items
        if items is None:
            assert self._chunk is not None
            items = self._items = self._chunk.row(self._row)
            self._chunk = None
        return items

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> Ranked: ...

    @overload
    def __getitem__(self, i: slice) -> list[Ranked]: ...

    def __getitem__(self, i: int | slice) -> Ranked | list[Ranked]:
        return self._list()[i]

    def __iter__(self) -> Iterator[Ranked]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RankedList | list | tuple):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RankedList({self._list()!r})"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Prepared:
    """A chunk ready for the numeric pass: everything the worker thread reads, nothing shared."""

    keywords: list[str]
    indptr: _IntArray
    cids: _IntArray
    limits: _IntArray
    top: int  # the largest limit of the whole chunk: every part picks as many
    excluded: tuple[_IntArray, _IntArray] | None
    seen_rows: _IntArray
    seen_cols: _IntArray
    wt: Any
    xt: Any
    dense: _F32Array | None


_Picked = tuple[_IntArray, _F32Array, _IntArray]


def _halves(prepared: _Prepared) -> list[_Prepared]:
    """The chunk's first and second half of rows, each a chunk of its own."""
    m = len(prepared.limits)
    out = []
    for lo, hi in ((0, m // 2), (m // 2, m)):
        indptr, cids = _rows(prepared.indptr, prepared.cids, lo, hi)
        excluded = None
        if prepared.excluded is not None:
            excluded = _rows(*prepared.excluded, lo, hi)
        inside = (prepared.seen_rows >= lo) & (prepared.seen_rows < hi)
        out.append(
            dataclasses.replace(
                prepared,
                indptr=indptr,
                cids=cids,
                limits=prepared.limits[lo:hi],
                excluded=excluded,
                seen_rows=prepared.seen_rows[inside] - lo,
                seen_cols=prepared.seen_cols[inside],
            )
        )
    return out


def _rows(indptr: _IntArray, ids: _IntArray, lo: int, hi: int) -> tuple[_IntArray, _IntArray]:
    """Rows ``lo:hi`` of a CSR structure."""
    return indptr[lo : hi + 1] - indptr[lo], ids[indptr[lo] : indptr[hi]]


def _pick(prepared: _Prepared) -> _Picked:
    """Scores of a chunk (one sparse product), exclusions and seen papers zeroed, then top-k."""
    # scipy is imported where it is used: a process that never ranks (the sending side of a
    # composing process) does without loading it
    from scipy import sparse

    m = len(prepared.indptr) - 1
    n = prepared.wt.shape[1]
    top = min(prepared.top, n)
    if top == 0 or not len(prepared.cids):
        return np.zeros((m, top), np.int64), np.zeros((m, top), np.float32), np.zeros(m, np.int64)
    scores = _scores(prepared)
    if prepared.excluded is not None:
        ex_indptr, ex_cids = prepared.excluded
        ex_profiles = sparse.csr_array(
            (np.ones(len(ex_cids)), ex_cids, ex_indptr), shape=(m, prepared.xt.shape[0])
        )
        hits = (ex_profiles @ prepared.xt).tocoo()
        scores[hits.row, hits.col] = 0.0
    if len(prepared.seen_cols):
        scores[prepared.seen_rows, prepared.seen_cols] = 0.0
    return _top(scores, top, prepared.limits)


def _scores(prepared: _Prepared) -> _F32Array:
    """The dense chunk x papers scores: one sparse product against the concept weights."""
    from scipy import sparse

    indptr, cids, dense = prepared.indptr, prepared.cids, prepared.dense
    m = len(indptr) - 1
    ones = np.ones(len(cids), dtype=np.float32)
    if dense is not None:
        # sparse x dense (float32), quicker than sparse x sparse here since the scores are
        # dense anyway; only the rows of the chunk's concepts are read
        profiles = sparse.csr_array((ones, cids, indptr), shape=(m, dense.shape[0]))
        return np.asarray(profiles @ dense, dtype=np.float32)
    local, inverse = np.unique(cids, return_inverse=True)
    block = prepared.wt[local].toarray().astype(np.float32)
    profiles = sparse.csr_array((ones, inverse, indptr), shape=(m, len(local)))
    return np.asarray(profiles @ block, dtype=np.float32)


def _csr_rows(rows: list[_IntArray], data: list[_FloatArray] | None, width: int) -> Any:
    """A CSR array of these rows' columns and values (None: ones)."""
    from scipy import sparse

    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if data is None:
        values = np.ones(len(indices))
    else:
        values = np.concatenate(data) if data else np.zeros(0)
    return sparse.csr_array((values, indices, indptr), shape=(len(rows), width))


# Groups per wanted paper when bounding a row's k-th best score (see _kth_bound): with several
# groups per paper wanted, two of the best seldom share a group, and the bound lets few more
# candidates through to the sort than the exact k-th best would.
TOP_GROUPS_PER_K = 5


def _top(scores: _F32Array, k: int, limits: _IntArray) -> tuple[_IntArray, _F32Array, _IntArray]:
    """Each row's k best columns and their scores, best first, ties to the smaller column, and
    how many of them to keep (positive and within the row's limit)."""
    m, n = scores.shape
    # Candidates: every positive score at or above a floor no higher than the row's k-th best
    # (the sort below picks the best of them, so any such floor gives the same result).
    floor = np.maximum(_kth_bound(scores, k), np.finfo(np.float32).tiny)
    flat = np.flatnonzero(scores >= floor[:, None])
    rows = flat // n
    values = scores.ravel()[flat]
    # positive float32s order as their bit patterns: one int64 key sorts by row, then best first;
    # the stable sort keeps the row-major order, the smaller column first, among equal scores
    key = (rows << 32) | (0x7FFFFFFF - values.view(np.int32)).astype(np.int64)
    order = np.argsort(key, kind="stable")
    flat, rows, values = flat[order], rows[order], values[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, np.arange(m))[rows]
    keep = rank < np.minimum(limits, k)[rows]
    rows, rank = rows[keep], rank[keep]
    best = np.zeros((m, k), dtype=np.int64)
    best_values = np.zeros((m, k), dtype=np.float32)
    best[rows, rank] = flat[keep] - rows * n
    best_values[rows, rank] = values[keep]
    return best, best_values, np.bincount(rows, minlength=m).astype(np.int64)


def _kth_bound(scores: _F32Array, k: int) -> _F32Array:
    """Per row, a value at most its k-th best score, and close to it.

    The columns are dealt into groups (column j into group j mod g); the k-th best of the
    groups' maxima is k different scores' least, so no higher than the k-th best score, and
    equal to it unless two of the best k share a group. Finding it reads each score once
    (elementwise maxima) and partitions g values a row rather than all n.
    """
    m, n = scores.shape
    g = TOP_GROUPS_PER_K * k
    if k >= n or n < 2 * g:  # too few columns for groups to save anything
        return np.partition(scores, n - k, axis=1)[:, n - k] if k < n else np.zeros(m, np.float32)
    groups = scores[:, :g].copy()
    whole = n // g * g
    for start in range(g, whole, g):
        np.maximum(groups, scores[:, start : start + g], out=groups)
    if whole < n:  # the last columns are groups of their own
        groups = np.concatenate([groups, scores[:, whole:]], axis=1)
    size = groups.shape[1]
    return np.partition(groups, size - k, axis=1)[:, size - k]


def rank(docs: Sequence[Doc], profiles: Sequence[Profile]) -> list[list[Ranked]]:
    """Rank ``docs`` for each profile (a convenience over ``Index.build(docs).rank(profiles)``)."""
    return [list(ranked) for _, ranked in Index.build(docs).rank(profiles)]


class _HighlightText:
    """A text tokenised once for highlighting: postings, each token position's characters, and
    (built on first need) where each term of art occurs in it."""

    def __init__(self, text: str) -> None:
        tokens, _ = _scan(text, 0)
        self.postings = _Postings()
        self.postings.add(0, tokens)
        # a match starts where its first token starts and ends where its last ends (a joined
        # compound covers its parts and hyphens, stopword parts included)
        self.starts: dict[int, int] = {}
        self.ends: dict[int, int] = {}
        for _, start, end, char_start, char_end in tokens:
            self.starts[start] = min(char_start, self.starts.get(start, char_start))
            self.ends[end] = max(char_end, self.ends.get(end, char_end))
        self._art: tuple[tuple[int, tuple[tuple[int, int], ...]], ...] | None = None

    def art(self) -> tuple[tuple[int, tuple[tuple[int, int], ...]], ...]:
        """(term of art index, its token spans) for each term of art in the text."""
        if self._art is None:
            found = (
                (term, tuple(_occurrences(self.postings, forms).get(0, ())))
                for term, forms in enumerate(_art_phrases())
            )
            self._art = tuple((term, spans) for term, spans in found if spans)
        return self._art


@lru_cache(maxsize=2048)
def _highlight_text(text: str) -> _HighlightText:
    # Cached: a send highlights each abstract for thousands of readers, and tokenising it is
    # most of the cost. Its state only ever gains lazily built parts, alike for every caller.
    return _HighlightText(text)


def highlight_spans(text: str, keywords: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of ``keywords`` in ``text``: sorted, non-overlapping, as the ranker sees.

    A keyword whose phrase (or an equivalent form) occurs in ``text`` marks those phrases;
    otherwise its single words. To mark exactly what the ranker matched, pass the keywords of the
    ``Ranked.matches`` in that field: ``[m.keyword for m in r.matches if m.field == "title"]``.
    """
    prepared = _highlight_text(text)
    postings, starts, ends = prepared.postings, prepared.starts, prepared.ends
    spans: list[tuple[int, int]] = []
    for keyword in itertools.islice(keywords, MAX_KEYWORDS):
        concept = _compile(keyword)
        if concept is None:
            continue
        found = _occurrences(postings, concept.variants).get(0, set())
        if not found and concept.units:
            # the words as the ranker counts them: not inside another term of art
            own = _own_terms(concept)
            blocked = [
                span
                for term, term_spans in prepared.art()
                if term not in own
                for span in term_spans
            ]
            for unit in concept.units:
                in_text = _occurrences(postings, unit).get(0, set())
                found |= {
                    (start, end)
                    for start, end in in_text
                    if not any(a <= start <= b for a, b in blocked)
                }
        spans.extend((starts[start], ends[end]) for start, end in found)
    return merge_spans(spans)


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans sorted, overlapping ones joined (touching ones stay apart)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
