"""Rank an edition's papers for many readers in one vectorised pass, and explain every pick.

Pure: papers and profiles in, ranked and explained papers out; no clock, database or network.

How a pass works:

1. ``Index.build`` tokenises and stems every paper once per edition, keeping token positions so
   phrases can be found later. Tokens are lowercase unicode words; a hyphenated compound is indexed
   both as its parts and as the joined word ("pre-training" -> ``pre``, ``train`` and ``pretrain``),
   stopwords take no position (so "mixture of experts" ~ "mixture-of-experts" ~ "mixture experts"),
   and punctuation such as ``.`` ``,`` ``(`` breaks a phrase.
2. Every distinct keyword becomes a *concept*: the token sequences that count as a match (the
   keyword, its hyphen-split/joined forms, acronym <-> expansion from ``EQUIVALENTS``) plus, for
   multi-word keywords, its words ("units") for partial credit. A concept's weights over the papers
   (and, for exclusions, the set of papers it matches) are computed the first time a profile uses
   it and cached on the index, so each concept costs one pass per edition whatever its readers.
3. Profiles are taken in chunks: a sparse profiles x concepts matrix times the concepts x papers
   weights gives every score at once; exclusions are a second product; seen papers a mask;
   ``argpartition`` picks each row's top-k; only those k become Python objects with explanations.

Score of a paper for a profile = the sum over the profile's keywords of

* a phrase (full) match: ``idf * (TITLE_WEIGHT * sat(tf_title) + sat(tf_abstract))``, BM25
  saturation ``sat(tf) = tf (K1 + 1) / (tf + K1 (1 - b + b len / avglen))`` and BM25 idf over the
  edition's papers; so one title mention (2.5 x idf) beats any number of abstract mentions
  (< 2.2 x idf) for an ordinary title length;
* otherwise, when enough of a multi-word keyword's words occur anywhere (all of them for up to
  three words, all but one beyond), a partial credit ``PARTIAL_WEIGHT`` times the mean of the
  words' own scores, each word's idf capped at the phrase's: at most ~0.4 x idf, below any full
  match of the same keyword;

times an upvote tie-break ``1 + upvote_weight * log1p(upvotes)`` (default ``UPVOTE_WEIGHT`` =
0.002: +1% at 150 upvotes, so it only reorders papers within about 1% of each other; multiplying
keeps unmatched papers at 0 and folds into the concept weights, so it costs nothing per reader).
Ties go to the smaller key. Scores are comparable within an edition only.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import Stemmer
from scipy import sparse

Field = Literal["title", "abstract"]

MAX_KEYWORDS = 50
MAX_KEYWORD_CHARS = 100
MAX_TEXT_CHARS = 50_000  # per title or abstract; the rest is neither ranked nor highlighted
MAX_KEYWORD_TOKENS = 12
MAX_VARIANTS = 32
MAX_COMPOUND_PARTS = 6  # longer hyphen chains are indexed as parts only

TITLE_WEIGHT = 2.5
K1 = 1.2
B_TITLE = 0.3
B_ABSTRACT = 0.75
PARTIAL_WEIGHT = 0.05
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

_WORD_CHARS = r"(?:[^\W_]|[\u0300-\u036f])+"
_WORD = rf"{_WORD_CHARS}(?:['\u2019]{_WORD_CHARS})*"
_WORD_RE = re.compile(_WORD)
# a word or hyphen compound (group 1), or punctuation that breaks a phrase
_SCAN_RE = re.compile(
    rf"({_WORD}(?:[-\u2010\u2011]{_WORD})*)|[.,;:!?()\[\]{{}}<>|\u2022\u00b7\u2014\"\u201c\u201d]"
)
_COMBINING_RE = re.compile(r"[\u0300-\u036f]")
_ACRONYM_PLURAL_RE = re.compile(r"[A-Z][A-Z0-9]+s")  # LLMs, GPUs
_CONSONANT_PLURAL_RE = re.compile(r"[bcdfghjklmnpqrstvwxz]{2,}s")  # llms, cnns
_KEYWORD_SPLIT_RE = re.compile(r"[,;\n\r]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")

_DENSE_CELLS = 1 << 23  # a chunk's concepts x papers block densified up to 64 MB, else sparse
_ABSTRACT_BASE = 1 << 20  # abstract positions start here; titles never reach it
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
    for found in _SCAN_RE.finditer(text, 0, MAX_TEXT_CHARS):
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
        parts: list[tuple[str, int, int]] = []
        norms: list[str] = []
        raws: list[str] = []
        for part in _WORD_RE.finditer(raw):
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
        if parts or joined:
            yield broken, parts, joined, at, found.end()
            broken = False


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


def _field_counts(spans: set[tuple[int, int]]) -> tuple[int, int]:
    starts = {start for start, _ in spans}
    title = sum(1 for start in starts if start < _ABSTRACT_BASE)
    return title, len(starts) - title


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
    if len(units) >= 2:
        unit_variants = tuple(tuple(_expand(list(unit))) for unit in units)
    key = repr((sorted(variants), sorted(sorted(u) for u in unit_variants)))
    return _Concept(key=key, variants=tuple(variants), units=unit_variants)


def _needed_units(n: int) -> int:
    return n if n <= 3 else n - 1


_Detail = tuple[tuple[Field, int, bool], ...]
_IntArray = npt.NDArray[np.int64]
_FloatArray = npt.NDArray[np.float64]


class Index:
    """An edition's papers, tokenised once, ready to rank any number of profiles."""

    def __init__(
        self,
        *,
        keys: list[str],
        postings: _Postings,
        title_len: _FloatArray,
        abstract_len: _FloatArray,
        boost: _FloatArray,
    ) -> None:
        self.keys = keys
        self._postings = postings
        self._key_index = {key: i for i, key in enumerate(keys)}
        self._key_set = frozenset(keys)
        n = len(keys)
        self._n = n
        title_avg = float(title_len.mean()) if n else 1.0
        abstract_avg = float(abstract_len.mean()) if n else 1.0
        self._title_norm = 1 - B_TITLE + B_TITLE * title_len / max(title_avg, 1e-9)
        self._abstract_norm = 1 - B_ABSTRACT + B_ABSTRACT * abstract_len / max(abstract_avg, 1e-9)
        self._boost = boost
        self._kw_cid: dict[str, int] = {}
        self._key_cid: dict[str, int] = {}
        self._details: list[dict[int, _Detail]] = []
        self._explained: dict[tuple[str, int], tuple[Match, ...]] = {}
        self._occ_cache: dict[tuple[Variant, ...], dict[int, tuple[int, int]]] = {}
        self._w_rows: list[tuple[_IntArray, _FloatArray]] = []
        self._x_rows: list[_IntArray] = []
        self._nonzero: _IntArray = np.zeros(0, dtype=np.int64)
        self._wt: Any = None
        self._xt: Any = None
        self._built_rows = 0

    @classmethod
    def build(cls, docs: Sequence[Doc], *, upvote_weight: float = UPVOTE_WEIGHT) -> Index:
        """Tokenise and stem an edition's papers (duplicate keys: the first one wins)."""
        unique: dict[str, Doc] = {}
        for doc in docs:
            unique.setdefault(doc.key, doc)
        keys = sorted(unique)
        postings = _Postings()
        title_len = np.zeros(len(keys))
        abstract_len = np.zeros(len(keys))
        boost = np.ones(len(keys))
        for i, key in enumerate(keys):
            doc = unique[key]
            tokens, title_len[i] = _scan(doc.title, 0)
            postings.add(i, tokens)
            tokens, abstract_len[i] = _scan(doc.abstract, _ABSTRACT_BASE)
            postings.add(i, tokens)
            if doc.upvotes:
                boost[i] += upvote_weight * math.log1p(max(doc.upvotes, 0))
        return cls(
            keys=keys,
            postings=postings,
            title_len=title_len,
            abstract_len=abstract_len,
            boost=boost,
        )

    def __len__(self) -> int:
        return self._n

    def rank(
        self, profiles: Iterable[Profile], *, chunk: int = 4096
    ) -> Iterator[tuple[Profile, list[Ranked]]]:
        """Rank every profile, streaming ``(profile, ranked)`` in input order, chunk by chunk."""
        it = iter(profiles)
        while batch := list(itertools.islice(it, max(chunk, 1))):
            yield from zip(batch, self._rank_chunk(batch), strict=True)

    # concepts

    def _concept_id(self, keyword: str) -> int:
        cid = self._kw_cid.get(keyword)
        if cid is not None:
            return cid
        concept = _compile(keyword)
        if concept is None:
            cid = -1
        elif concept.key in self._key_cid:
            cid = self._key_cid[concept.key]
        else:
            cid = self._add_concept(concept)
        if len(self._kw_cid) < 1_000_000:
            self._kw_cid[keyword] = cid
        return cid

    def _counts(self, variants: tuple[Variant, ...]) -> dict[int, tuple[int, int]]:
        counts = self._occ_cache.get(variants)
        if counts is None:
            occurrences = _occurrences(self._postings, variants)
            counts = {doc: _field_counts(spans) for doc, spans in occurrences.items()}
            self._occ_cache[variants] = counts
        return counts

    def _idf(self, df: int) -> float:
        return math.log(1.0 + (self._n - df + 0.5) / (df + 0.5))

    def _weights(self, docs: _IntArray, title: _FloatArray, abstract: _FloatArray) -> _FloatArray:
        """Field-weighted BM25 saturation of term frequencies, times the upvote boost."""
        k1 = K1
        return (
            TITLE_WEIGHT * title * (k1 + 1) / (title + k1 * self._title_norm[docs])
            + abstract * (k1 + 1) / (abstract + k1 * self._abstract_norm[docs])
        ) * self._boost[docs]

    def _add_concept(self, concept: _Concept) -> int:
        full = self._counts(concept.variants)
        idf = self._idf(len(full))
        details: dict[int, _Detail] = {
            doc: tuple((field, n, False) for field, n in zip(_FIELDS, counts, strict=True) if n)
            for doc, counts in full.items()
        }
        docs = np.fromiter(full, dtype=np.int64, count=len(full))
        tf = np.array(list(full.values()), dtype=np.float64).reshape(-1, 2)
        weights = idf * self._weights(docs, tf[:, 0], tf[:, 1])
        if concept.units:
            unit_counts = [self._counts(unit) for unit in concept.units]
            need = _needed_units(len(unit_counts))
            present: dict[int, int] = {}
            for counts in unit_counts:
                for doc in counts:
                    if doc not in full:
                        present[doc] = present.get(doc, 0) + 1
            partial = np.array([d for d, n in present.items() if n >= need], dtype=np.int64)
            if len(partial):
                total = np.zeros(len(partial))
                in_fields = np.zeros((len(partial), 2))
                for counts in unit_counts:
                    unit_tf = np.array(
                        [counts.get(d, (0, 0)) for d in partial.tolist()], dtype=float
                    )
                    unit_idf = min(self._idf(len(counts)), idf)  # never above the phrase's
                    total += unit_idf * self._weights(partial, unit_tf[:, 0], unit_tf[:, 1])
                    in_fields += unit_tf
                docs = np.concatenate([docs, partial])
                weights = np.concatenate([weights, PARTIAL_WEIGHT * total / len(unit_counts)])
                for doc, (in_title, in_abstract) in zip(
                    partial.tolist(), in_fields.astype(int).tolist(), strict=True
                ):
                    details[doc] = tuple(
                        (field, n, True)
                        for field, n in zip(_FIELDS, (in_title, in_abstract), strict=True)
                        if n
                    )
        order = np.argsort(docs)
        self._w_rows.append((docs[order], weights[order]))
        self._x_rows.append(np.sort(np.fromiter(full, dtype=np.int64, count=len(full))))
        self._details.append(details)
        cid = len(self._details) - 1
        self._key_cid[concept.key] = cid
        return cid

    def _matrices(self) -> tuple[Any, Any, _IntArray]:
        """The concepts x papers weights, exclusions and sorted ``concept * n + paper`` keys of the
        weights' nonzeros, grown to the current vocabulary."""
        n_rows = len(self._w_rows)
        if self._wt is None or self._built_rows < n_rows:
            wt = _csr_rows(
                [docs for docs, _ in self._w_rows], [w for _, w in self._w_rows], self._n
            )
            self._wt = wt
            self._xt = _csr_rows(self._x_rows, [np.ones(len(x)) for x in self._x_rows], self._n)
            rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(wt.indptr))
            self._nonzero = rows * self._n + wt.indices
            self._built_rows = n_rows
        return self._wt, self._xt, self._nonzero

    # ranking

    def _profile_concepts(self, keywords: Iterable[str]) -> list[tuple[str, int]]:
        """(keyword, concept id) for a profile's keywords, one per concept, bounded.

        The profile's own order is kept: explanations follow it, and float sums, taken in it,
        come out the same whatever batch the profile is ranked in.
        """
        seen: set[int] = set()
        out: list[tuple[str, int]] = []
        for keyword in itertools.islice(keywords, MAX_KEYWORDS):
            cid = self._concept_id(keyword)
            if cid >= 0 and cid not in seen:
                seen.add(cid)
                out.append((keyword, cid))
        return out

    def _rank_chunk(self, batch: list[Profile]) -> list[list[Ranked]]:
        n = self._n
        wanted = [self._profile_concepts(p.keywords) for p in batch]
        limits = np.array([max(0, min(int(p.limit), n)) for p in batch], dtype=np.int64)
        top = int(limits.max(initial=0))
        if top == 0 or not any(wanted):
            return [[] for _ in batch]
        indptr, cids = _flatten([[cid for _, cid in concepts] for concepts in wanted])
        scores = self._scores(indptr, cids)
        if any(p.exclude for p in batch):
            excluded = [[cid for _, cid in self._profile_concepts(p.exclude)] for p in batch]
            _, xt, _ = self._matrices()
            ex_indptr, ex_cids = _flatten(excluded)
            ex_profiles = sparse.csr_array(
                (np.ones(len(ex_cids)), ex_cids, ex_indptr), shape=(len(batch), xt.shape[0])
            )
            hits = (ex_profiles @ xt).tocoo()
            scores[hits.row, hits.col] = 0.0
        for i, profile in enumerate(batch):
            if profile.seen:
                seen = profile.seen & self._key_set
                if seen:
                    scores[i, [self._key_index[key] for key in seen]] = 0.0
        best, values, counts = _top(scores, top, limits)
        with _collector_paused():
            explanations = self._explain(wanted, indptr, cids, best, counts)
            keys = self.keys
            out: list[list[Ranked]] = []
            at = 0
            for docs, row_values, count in zip(
                best.tolist(), values.tolist(), counts.tolist(), strict=True
            ):
                out.append(
                    [
                        Ranked(key=keys[doc], score=score, matches=explanations[at + j])
                        for j, (doc, score) in enumerate(
                            zip(docs[:count], row_values[:count], strict=True)
                        )
                    ]
                )
                at += count
        return out

    def _scores(self, indptr: _IntArray, cids: _IntArray) -> _FloatArray:
        """The dense chunk x papers scores: one sparse product against the concept weights."""
        wt, _, _ = self._matrices()
        m = len(indptr) - 1
        local, inverse = np.unique(cids, return_inverse=True)
        ones = np.ones(len(cids))
        if len(local) * self._n <= _DENSE_CELLS:
            # the chunk's concepts as a dense block: sparse x dense is several times faster than
            # sparse x sparse here, since the scores are dense anyway
            block = wt[local].toarray()
            profiles = sparse.csr_array((ones, inverse, indptr), shape=(m, len(local)))
            return np.asarray(profiles @ block)
        profiles = sparse.csr_array((ones, cids, indptr), shape=(m, wt.shape[0]))
        return np.asarray((profiles @ wt).toarray())

    def _explain(
        self,
        wanted: list[list[tuple[str, int]]],
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
        _, _, nonzero = self._matrices()
        where = np.minimum(np.searchsorted(nonzero, query), max(len(nonzero) - 1, 0))
        hit = nonzero[where] == query if len(nonzero) else np.zeros(len(query), dtype=bool)
        keywords = [keyword for concepts in wanted for keyword, _ in concepts]
        flat_cids = cids.tolist()
        docs = pair_doc.tolist()
        details = self._details
        cache = self._explained
        explanations: list[tuple[Match, ...]] = [()] * len(docs)
        for pair, pos in zip(entry_pair[hit].tolist(), entry_pos[hit].tolist(), strict=True):
            keyword, doc = keywords[pos], docs[pair]
            found = cache.get((keyword, doc))
            if found is None:
                found = cache[(keyword, doc)] = tuple(
                    Match(keyword=keyword, field=field, count=count, partial=partial)
                    for field, count, partial in details[flat_cids[pos]][doc]
                )
            explanations[pair] += found
        return explanations


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a chunk's result objects are built.

    They hold no cycles, but creating ~30 objects per reader triggers collections that walk the
    whole heap (the index included): pausing halves the cost of building them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _flatten(rows: list[list[int]]) -> tuple[_IntArray, _IntArray]:
    """CSR row pointers and column ids of a list of rows."""
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in rows], out=indptr[1:])
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(indptr[-1]))
    return indptr, flat


def _csr_rows(rows: list[_IntArray], data: list[_FloatArray], width: int) -> Any:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    values = np.concatenate(data) if data else np.zeros(0)
    return sparse.csr_array((values, indices, indptr), shape=(len(rows), width))


def _top(
    scores: _FloatArray, k: int, limits: _IntArray
) -> tuple[_IntArray, _FloatArray, _IntArray]:
    """Each row's k best columns and their scores, best first, ties to the smaller column, and
    how many of them to keep (positive and within the row's limit)."""
    m, n = scores.shape
    if k < n:
        part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        threshold = np.take_along_axis(scores, part[:, :1], axis=1)
        # argpartition cuts ties at the boundary arbitrarily: take the smaller columns instead
        ties = np.flatnonzero(
            (threshold[:, 0] > 0) & ((scores >= threshold).sum(axis=1, dtype=np.int64) > k)
        )
        if ties.size:
            tied = scores[ties]
            above = tied > threshold[ties]
            equal = tied == threshold[ties]
            need = k - above.sum(axis=1)
            keep = above | (equal & (np.cumsum(equal, axis=1) <= need[:, None]))
            part[ties] = np.nonzero(keep)[1].reshape(len(ties), k)
    else:
        part = np.broadcast_to(np.arange(n), (m, n)).copy()
    values = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -values), axis=-1)
    values = np.take_along_axis(values, order, axis=1)
    counts = np.minimum(limits, (values > 0).sum(axis=1))
    return np.take_along_axis(part, order, axis=1), values, counts


def rank(docs: Sequence[Doc], profiles: Sequence[Profile]) -> list[list[Ranked]]:
    """Rank ``docs`` for each profile (a convenience over ``Index.build(docs).rank(profiles)``)."""
    return [ranked for _, ranked in Index.build(docs).rank(profiles)]


def parse_keywords(text: str) -> tuple[str, ...]:
    """Split a reader's keyword text on commas, semicolons and newlines; trim, dedupe, bound."""
    out: list[str] = []
    seen: set[str] = set()
    for piece in _KEYWORD_SPLIT_RE.split(text[: MAX_KEYWORDS * (MAX_KEYWORD_CHARS + 1) * 20]):
        keyword = " ".join(_CONTROL_RE.sub(" ", piece).split())
        keyword = keyword[:MAX_KEYWORD_CHARS].rstrip()
        folded = keyword.casefold()
        if not keyword or folded in seen:
            continue
        seen.add(folded)
        out.append(keyword)
        if len(out) >= MAX_KEYWORDS:
            break
    return tuple(out)


def highlight_spans(text: str, keywords: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of ``keywords`` in ``text``: sorted, non-overlapping, as the ranker sees.

    A keyword whose phrase (or an equivalent form) occurs in ``text`` marks those phrases;
    otherwise its single words. To mark exactly what the ranker matched, pass the keywords of the
    ``Ranked.matches`` in that field: ``[m.keyword for m in r.matches if m.field == "title"]``.
    """
    tokens, _ = _scan(text, 0)
    postings = _Postings()
    postings.add(0, tokens)
    # a match starts where its first token starts and ends where its last ends (a joined
    # compound covers its parts and hyphens, stopword parts included)
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for _, start, end, char_start, char_end in tokens:
        starts[start] = min(char_start, starts.get(start, char_start))
        ends[end] = max(char_end, ends.get(end, char_end))
    spans: list[tuple[int, int]] = []
    for keyword in itertools.islice(keywords, MAX_KEYWORDS):
        concept = _compile(keyword)
        if concept is None:
            continue
        found = _occurrences(postings, concept.variants).get(0, set())
        if not found:
            for unit in concept.units:
                found |= _occurrences(postings, unit).get(0, set())
        spans.extend((starts[start], ends[end]) for start, end in found)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
