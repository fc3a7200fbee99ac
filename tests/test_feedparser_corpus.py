"""Every file of feedparser's own test corpus ends as papers or a SourceError, never a crash."""

from __future__ import annotations

import traceback
from pathlib import Path

from digest.errors import SourceError
from digest.sources import parse_source

SKIP = {"LICENSE", "MANIFEST.tsv"}


def test_corpus_parses_or_fails_cleanly(shared: Path) -> None:
    root = shared / "fixtures" / "feedparser-corpus"
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in SKIP)
    assert len(files) > 2_000
    crashes: list[str] = []
    with_papers = source_errors = 0
    for path in files:
        try:
            parsed = parse_source(path.read_bytes(), location=str(path))
        except SourceError:
            source_errors += 1
        except Exception:
            # Collect every crash so that one run reports them all.
            crashes.append(f"{path.relative_to(root)}:\n{traceback.format_exc(limit=3)}")
        else:
            with_papers += bool(parsed.papers)
            assert all(p.title and "\n" not in p.title for p in parsed.papers), path
    assert not crashes, f"{len(crashes)} files crashed:\n" + "\n".join(crashes[:20])
    # Most corpus files test one feed-level element and have no titled entry; these are measured.
    assert with_papers >= 150
    assert source_errors <= 20
