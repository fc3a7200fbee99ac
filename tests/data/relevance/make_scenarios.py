"""Write the feedback scenarios of both judged sets: scenarios.json beside each set's qrels.

    .venv/bin/python tests/data/relevance/make_scenarios.py [--seeds ../shared/seeds]
                                                          [--hf ../shared/fixtures/hf_daily_papers]

Per profile, two scenarios (issue 17):

* **a**: the profile's keywords, 3 liked papers and 3 disliked papers. The disliked papers are
  the 3 highest-ranked grade-0 papers of the project's ranker (``digest.ranking.Index``, default
  settings) for the keywords alone: the false positives a reader would mark.
* **b**: 5 liked papers and no keywords.

Liked papers are drawn in a fixed order that depends only on the profile and paper ids: the
profile's grade-2 papers sorted by SHA-256 of "<profile id>/<paper id>", then (only where a
profile has too few grade-2 papers) its grade-1 papers in the same order. Scenario a takes the
first 3, scenario b the first 5, so a's liked papers are among b's.

The files are deterministic: rerunning gives the same bytes as long as the grades and the
ranker (for the disliked papers) are unchanged. The ranker's commit is recorded in each file.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]
LIKED_A, DISLIKED_A, LIKED_B = 3, 3, 5


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


def liked_order(profile: str, grades: dict[str, int]) -> list[str]:
    """The profile's relevant papers in drawing order: grade 2 first, each grade by hash."""

    def draw(paper: str) -> str:
        return hashlib.sha256(f"{profile}/{paper}".encode()).hexdigest()

    best = sorted((p for p, g in grades.items() if g == 2), key=draw)
    partly = sorted((p for p, g in grades.items() if g == 1), key=draw)
    return best + partly


def dump(head: dict[str, str], scenarios: list[dict[str, object]]) -> str:
    """JSON with one scenario a line, so that a diff shows which scenario changed."""
    lines = ",\n  ".join(json.dumps(s, ensure_ascii=False) for s in scenarios)
    top = json.dumps(head, indent=1, ensure_ascii=False).removesuffix("\n}")
    return f'{top},\n "scenarios": [\n  {lines}\n ]\n}}\n'


def ranker_commit() -> str:
    """The last commit that changed the ranker or the keyword parser."""
    out = subprocess.run(
        ["git", "log", "-1", "--format=%H", "--", "digest/ranking.py", "digest/keywords.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def main() -> None:
    """Write tests/data/relevance{,-reporting}/scenarios.json."""
    bench = load_bench()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=Path, default=bench.SEEDS)
    parser.add_argument("--hf", type=Path, default=bench.HF_PAPERS)
    args = parser.parse_args()
    commit = ranker_commit()
    for name, folder in bench.SETS.items():
        judged = bench.load(args.seeds, folder, hf=args.hf, name=name)
        typed = {p["id"]: p["keywords"] for p in json.loads((folder / "profiles.json").read_text())}
        ours = bench.keyword_ranker(depth=len(judged.docs))
        scenarios: list[dict[str, object]] = []
        short = []
        for keywords_only in judged.scenarios["keywords"]:
            pid = keywords_only.profile
            grades = judged.grades[pid]
            order = liked_order(pid, grades)
            ranked = ours(keywords_only, judged.edition)
            disliked = [p for p in ranked if grades[p] == 0][:DISLIKED_A]
            scenarios.append(
                {
                    "profile": pid,
                    "kind": "a",
                    "keywords": typed[pid],
                    "liked": order[:LIKED_A],
                    "disliked": disliked,
                }
            )
            scenarios.append(
                {
                    "profile": pid,
                    "kind": "b",
                    "keywords": "",
                    "liked": order[:LIKED_B],
                    "disliked": [],
                }
            )
            best = sum(1 for g in grades.values() if g == 2)
            if best < LIKED_B or len(disliked) < DISLIKED_A:
                short.append(f"{pid} ({best} grade-2, {len(disliked)} disliked)")
        head = {
            "set": name,
            "made_by": "tests/data/relevance/make_scenarios.py",
            "disliked_ranker_commit": commit,
            "note": (
                "Scoring removes every marked (liked or disliked) paper from the ranking and "
                "from the judgments. See the README beside this file."
            ),
        }
        out = folder / "scenarios.json"
        out.write_text(dump(head, scenarios), encoding="utf-8")
        print(
            f"{out.relative_to(ROOT)}: {len(scenarios)} scenarios; short: {', '.join(short) or 'none'}"
        )


if __name__ == "__main__":
    main()
