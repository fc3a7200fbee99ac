"""Relevance floors on the judged set (tests/data/relevance): a ranking regression fails here.

The figures come from bench/relevance.py (run it to see the table); the floors sit a little under
what the ranker measured when they were set, and the mean stays clearly above plain BM25's. The
reporting set (tests/data/relevance-reporting) and both sets' feedback scenarios are only checked
for consistency here: the reporting set is never used to set a floor, a weight or a rule.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SET_FOLDERS = {"tuning": DATA / "relevance", "reporting": DATA / "relevance-reporting"}

# measured mean nDCG@20: ranker 0.900, BM25 0.837 (see tests/data/relevance/README.md, Results)
MEAN_FLOOR = 0.88
ABOVE_BM25 = 0.04
# per profile: the measured nDCG@20 less 0.05, rounded down
PROFILE_FLOORS = {
    "llm-inference": 0.83,
    "dataset-distillation": 0.94,
    "quantization": 0.92,
    "mixture-of-experts": 0.92,
    "prompt-optimization": 0.71,
    "test-time-adaptation": 0.89,
    "diffusion-image-generation": 0.87,
    "state-space-models": 0.92,
    "rlhf": 0.62,
    "data-selection": 0.74,
    "code-generation": 0.92,
    "lr-batch-optimizers": 0.84,
    "peft": 0.83,
    "domain-adaptation": 0.87,
    "scaling-laws": 0.80,
    "audio-generation": 0.95,
    "instruction-tuning": 0.79,
}


def load_bench() -> ModuleType:
    """bench/relevance.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_relevance", ROOT / "bench" / "relevance.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building the class
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench()


@pytest.fixture(scope="module")
def judged(bench: ModuleType) -> object:
    seeds = ROOT.parent / "shared" / "seeds"
    if not seeds.is_dir():
        pytest.skip("../shared/seeds (the papers of the judged set) is not beside the project")
    return bench.load(seeds)


def test_the_judged_set_is_complete(bench: ModuleType, judged: object) -> None:
    assert len(judged.docs) == 227  # type: ignore[attr-defined]
    assert len(judged.profiles) == 17  # type: ignore[attr-defined]
    assert set(PROFILE_FLOORS) == {pid for pid, _ in judged.profiles}  # type: ignore[attr-defined]
    assert all(len(g) == 227 for g in judged.grades.values())  # type: ignore[attr-defined]


def test_ndcg() -> None:
    ndcg = load_bench().ndcg
    grades = {"a": 2, "b": 1, "c": 0}
    assert ndcg(["a", "b", "c"], grades, 10) == pytest.approx(1.0)
    assert ndcg(["c", "b", "a"], grades, 10) < ndcg(["b", "a"], grades, 10) < 1.0
    assert ndcg([], grades, 10) == 0.0
    assert ndcg(["a"], {"a": 0}, 10) == 0.0


def test_ranker_holds_its_floors_and_beats_bm25(bench: ModuleType, judged: object) -> None:
    ours = bench.figures(judged, bench.project_rankings(judged))
    base = bench.figures(judged, bench.bm25_rankings(judged))
    _, mean20 = bench.means(ours)
    _, bm25_mean20 = bench.means(base)
    assert mean20 >= MEAN_FLOOR
    assert mean20 >= bm25_mean20 + ABOVE_BM25
    below = {pid: round(ours[pid][1], 3) for pid in ours if ours[pid][1] < PROFILE_FLOORS[pid]}
    assert below == {}


def read_set(folder: Path) -> tuple[list[dict[str, str]], dict[str, dict[str, int]], list[str]]:
    """A set's profiles, grades (profile -> paper -> grade) and paper ids, from its files alone."""
    profiles = json.loads((folder / "profiles.json").read_text(encoding="utf-8"))
    papers = [
        json.loads(line)["id"]
        for line in (folder / "papers.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    grades: dict[str, dict[str, int]] = {}
    lines = (folder / "qrels.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "profile_id\tpaper_id\tgrade"
    for line in lines[1:]:
        profile, paper, grade = line.split("\t")
        assert paper not in grades.setdefault(profile, {}), (profile, paper)
        grades[profile][paper] = int(grade)
    return profiles, grades, papers


def test_the_reporting_set_grades_every_pair() -> None:
    profiles, grades, papers = read_set(SET_FOLDERS["reporting"])
    tuning, _, _ = read_set(SET_FOLDERS["tuning"])
    assert len(papers) == len(set(papers)) == 290
    assert len(profiles) >= 10
    assert {p["id"] for p in profiles} == set(grades)
    assert not {p["id"] for p in profiles} & {p["id"] for p in tuning}
    for profile, row in grades.items():
        assert sorted(row) == sorted(papers), profile
        assert set(row.values()) <= {0, 1, 2}, profile
        relevant = [g for g in row.values() if g > 0]
        assert len(relevant) >= 6 and relevant.count(2) >= 5, profile


@pytest.mark.parametrize("name", sorted(SET_FOLDERS))
def test_scenarios_agree_with_the_qrels(name: str) -> None:
    folder = SET_FOLDERS[name]
    profiles, grades, _ = read_set(folder)
    stored = json.loads((folder / "scenarios.json").read_text(encoding="utf-8"))
    assert stored["set"] == name
    by_kind: dict[str, dict[str, dict[str, object]]] = {"a": {}, "b": {}}
    for scenario in stored["scenarios"]:
        assert scenario["profile"] not in by_kind[scenario["kind"]]
        by_kind[scenario["kind"]][scenario["profile"]] = scenario
    for profile in profiles:
        pid, row = profile["id"], grades[profile["id"]]
        a, b = by_kind["a"][pid], by_kind["b"][pid]
        assert a["keywords"] == profile["keywords"] and b["keywords"] == ""
        assert b["disliked"] == [] and len(b["liked"]) == 5 and a["liked"] == b["liked"][:3]
        # liked: grade 2 in a fixed hash order, topped up with grade 1 only when grade 2 runs out
        best = sorted(
            (p for p, g in row.items() if g == 2),
            key=lambda p: hashlib.sha256(f"{pid}/{p}".encode()).hexdigest(),
        )
        liked = b["liked"]
        assert liked[: len(best)] == best[:5]
        assert all(row[p] == 1 for p in liked[len(best) :])
        disliked = a["disliked"]
        assert 1 <= len(disliked) <= 3 and all(row[p] == 0 for p in disliked)
        assert len(set(liked) | set(disliked)) == len(liked) + len(disliked)
    assert set(by_kind["a"]) == set(by_kind["b"]) == {p["id"] for p in profiles}


def test_scoring_leaves_marked_papers_out() -> None:
    bench = load_bench()
    grades = {"x": 2, "y": 2, "z": 1, "n": 0}
    liked = bench.Scenario(profile="p", kind="b", liked=("x",))
    # "x" is marked: ranking it first neither helps nor hurts, and the ideal no longer needs it
    assert bench.score(liked, ["x", "y", "z"], grades) == pytest.approx((1.0, 1.0))
    assert bench.score(liked, ["y", "z"], grades) == pytest.approx((1.0, 1.0))
    unmarked = bench.Scenario(profile="p", kind="keywords")
    assert bench.score(unmarked, ["y", "z"], grades)[0] < 1.0
    disliked = bench.Scenario(profile="p", kind="a", disliked=("n",))
    assert bench.score(disliked, ["n", "x", "y", "z"], grades) == pytest.approx((1.0, 1.0))


def test_every_scenario_is_scored_on_both_sets(bench: ModuleType) -> None:
    shared = ROOT.parent / "shared"
    if not (shared / "seeds").is_dir() or not (shared / "fixtures" / "hf_daily_papers").is_dir():
        pytest.skip("../shared (seeds, fixtures/hf_daily_papers) is not beside the project")
    sets = bench.load_sets(shared / "seeds", hf=shared / "fixtures" / "hf_daily_papers")
    assert [len(s.docs) for s in sets.values()] == [227, 290]
    for judged in sets.values():
        assert sorted(judged.scenarios) == ["a", "b", "keywords"]

        def oracle(scenario: object, edition: object, grades: dict = judged.grades) -> list[str]:
            row = grades[scenario.profile]  # type: ignore[attr-defined]
            keys = [d.key for d in edition.docs]  # type: ignore[attr-defined]
            return sorted(keys, key=lambda k: -row[k])

        for kind in judged.scenarios:
            result = bench.evaluate(oracle, judged, kind, name="oracle")
            assert set(result.per_profile) == {pid for pid, _ in judged.profiles}
            assert result.mean == pytest.approx((1.0, 1.0)), (judged.name, kind)
