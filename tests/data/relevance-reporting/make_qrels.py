"""Regenerate papers.jsonl and qrels.tsv of the reporting set from the grading worksheet.

    python3 tests/data/relevance-reporting/make_qrels.py [--shared ../shared]

The worksheet is the record: one line per paper with its non-zero grades, written batch by batch
while reading, then "review" lines from the consistency pass that override one grade each. Codes
whose profile was dropped (``cl``) are kept in the worksheet and left out here. Standard library
only, and deterministic: the same worksheet gives the same files byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUNING = HERE.parent / "relevance"
SHARED = HERE.parents[3] / "shared"
HF_FILES = (
    "daily_papers_2026-06-12_sotawhat.json",
    "daily_papers_2026-07-31_personal-news-feed.json",
    "daily_papers_2026-08-03_3items_pretty_NewsAssistant.json",
)
DROPPED = {"cl"}


def codes(worksheet: list[str]) -> dict[str, str]:
    """Worksheet code -> profile id, from the header line that maps them."""
    for line in worksheet:
        if line.startswith("# Code -> profile id:"):
            pairs = line.split(":", 1)[1].split()
            return dict(pair.split("=", 1) for pair in pairs)
    raise ValueError("the worksheet has no code line")


def papers(shared: Path) -> list[dict[str, object]]:
    """The edition's papers in order: the 227 seed papers, then the Hugging Face ones."""
    out: list[dict[str, object]] = []
    for line in (TUNING / "papers.jsonl").read_text(encoding="utf-8").splitlines():
        paper = json.loads(line)
        out.append(
            {
                "id": paper["id"],
                "title": paper["title"],
                "source": "seeds",
                "files": paper["files"],
                "positions": paper["positions"],
                "title_sha1": paper["title_sha1"],
            }
        )
    for name in HF_FILES:
        entries = json.loads((shared / "fixtures" / "hf_daily_papers" / name).read_text("utf-8"))
        for position, entry in enumerate(entries, 1):
            title = entry["paper"]["title"].strip()
            out.append(
                {
                    "id": f"hf-{entry['paper']['id']}",
                    "title": title,
                    "source": "hf",
                    "files": [name],
                    "positions": {name: position},
                    "title_sha1": hashlib.sha1(title.encode("utf-8")).hexdigest(),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder holding fixtures/")
    args = parser.parse_args()
    worksheet = (HERE / "grading_worksheet.txt").read_text(encoding="utf-8").splitlines()
    code_map = codes(worksheet)
    profiles = [p["id"] for p in json.loads((HERE / "profiles.json").read_text("utf-8"))]
    edition = papers(args.shared)
    ids = [str(p["id"]) for p in edition]
    grades: dict[str, dict[str, int]] = {}
    for line in worksheet:
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        review = fields[0] == "review"
        if review:
            fields = fields[1:]
        paper_id, marks = fields[0], fields[1:]
        if review != (paper_id in grades):
            raise ValueError(f"{paper_id}: graded twice, or reviewed before it was graded")
        row = grades.setdefault(paper_id, {})
        for mark in marks:
            code, grade = mark.split("=")
            if code not in DROPPED:
                row[code_map[code]] = int(grade)
    if list(grades) != ids:
        raise ValueError("the worksheet's papers differ from the edition's, or are out of order")
    with (HERE / "papers.jsonl").open("w", encoding="utf-8") as out:
        for paper in edition:
            out.write(json.dumps(paper, ensure_ascii=False) + "\n")
    with (HERE / "qrels.tsv").open("w", encoding="utf-8") as out:
        out.write("profile_id\tpaper_id\tgrade\n")
        for profile in profiles:
            for paper_id in ids:
                out.write(f"{profile}\t{paper_id}\t{grades[paper_id].get(profile, 0)}\n")
    print(f"{len(ids)} papers x {len(profiles)} profiles = {len(ids) * len(profiles)} grades")


if __name__ == "__main__":
    main()
