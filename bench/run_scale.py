"""`digest run` for 100,000 subscribers into a loopback SMTP sink: wall time, rate, peak RSS.

    .venv/bin/python bench/run_scale.py [--subscribers 100000] [--papers 1000] [--connections 2]
                                        [--seen 0.3] [--py-spy FILE] [--workdir DIR]

Builds a SQLite database with bulk inserts: the seed lists (../shared/seeds/, or the bundled
sample list) ingested by digest itself, then copies of their papers with shuffled abstract
sentences up to --papers, all first seen today; --subscribers active readers with 3-8 keywords
each, drawn Zipf-like from a vocabulary of the seeds' title words and two-word phrases and the
topics readers type; 10% with an excluded keyword, 5% weekly, digests of 5, 10 or 20 papers; and
a --seen fraction of them already sent 20 of the edition's papers (yesterday's edition), so that
"never the same paper twice" has work to do.

Then runs the real command, ``digest --config CONFIG run`` (ingest the seed lists again, plan,
rank, render, build, send, record), in a child process, into a counting aiosmtpd sink in another
process (bench/send_speed.py --serve). Samples the child's RSS and the sink's count every 0.2 s.

Prints: the wall time of the command and of its send phase (first to last message at the sink),
messages/s, the sink's own ceiling (the same sink fed plain smtplib with the same number of
connections, measured in this run, on 2,000 of the run's own digests composed beforehand by digest
on a copy of the database; and on send_speed's 10-paper digests, which are shorter, for
comparison with earlier figures), the peak RSS of the command (ru_maxrss from
wait4) and its RSS along the run, and checks that every delivery recorded as sent arrived.
With --py-spy FILE, records the command with py-spy (all threads) and prints where the time went.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

from send_speed import Mail, SinkProcess, build_mails, send_baseline

from digest.config import load_settings
from digest.db import make_engine, table_of
from digest.ingest import SourceSpec, ingest
from digest.keywords import parse_keywords
from digest.models import Paper, SentPaper, Subscriber, utcnow
from digest.ranking import STOPWORDS
from digest.resources import bundled_path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9-]+")
TYPED = (
    "llm inference",
    "serving",
    "quantization",
    "dataset distillation",
    "speech recognition",
    "mixture of experts",
    "prompt optimization",
    "diffusion models",
    "video generation",
    "reinforcement learning",
    "retrieval augmented generation",
    "test-time adaptation",
    "multimodal",
    "agents",
    "reasoning",
    "code generation",
    "benchmark",
    "vision language models",
    "3d reconstruction",
    "robotics",
)


def seed_locations() -> list[Path]:
    """The seed lists, or the bundled sample list when ../shared is absent."""
    found = sorted(SEEDS.glob("daily-papers-*.txt"))
    return found or [Path(bundled_path("sample-papers.txt"))]


def vocabulary(titles: list[str]) -> list[str]:
    """Topics as readers type them, then the seeds' title words and phrases, most common first."""
    counts: Counter[str] = Counter()
    for title in titles:
        words = [w for w in _WORD.findall(title.lower()) if w not in STOPWORDS and len(w) > 2]
        counts.update(words)
        counts.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))
    common = [term for term, n in counts.most_common() if n >= 2]
    return list(dict.fromkeys([*TYPED, *common]))


def build_population(
    workdir: Path, *, subscribers: int, papers: int, seen: float, seed: int
) -> tuple[Path, dict[str, Any]]:
    """The database and the config file; and what the population looks like."""
    rng = random.Random(seed)
    db = workdir / "subscribers.db"
    config = workdir / "config.toml"
    sources = "\n".join(
        f'[[sources]]\nname = "{p.stem}"\nlocation = "{p}"' for p in seed_locations()
    )
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n\n{sources}\n')
    settings = load_settings(config, env={"DIGEST_SECRET_KEY": "b" * 40}, base_dir=workdir)
    engine = make_engine(settings.database.url)
    now = utcnow()
    ingest(engine, settings, [SourceSpec(name=p.stem, location=str(p)) for p in seed_locations()])
    with engine.begin() as conn:
        base = conn.execute(
            table_of(Paper)
            .select()
            .with_only_columns(
                table_of(Paper).c.title, table_of(Paper).c.abstract, table_of(Paper).c.authors
            )
        ).all()
        copies = []
        for i in range(len(base), papers):
            title, abstract, authors = base[i % len(base)]
            sentences = abstract.split(". ")
            rng.shuffle(sentences)
            copies.append(
                {
                    "key": f"bench:{i:05d}",
                    "title_key": f"bench-copy-{i}",
                    "title": title,
                    "abstract": ". ".join(sentences),
                    "authors": list(authors),
                    "url": f"https://arxiv.org/abs/2611.{i:05d}",
                    "sources": ["bench"],
                    "first_seen_at": now - timedelta(hours=1),
                    "updated_at": now,
                    "upvotes": rng.randint(0, 300),
                }
            )
        if copies:
            conn.execute(table_of(Paper).insert(), copies)
        paper_ids = [
            row[0]
            for row in conn.execute(
                table_of(Paper).select().with_only_columns(table_of(Paper).c.id)
            )
        ]
    terms = vocabulary([t for t, _, _ in base])
    weights = [1 / math.sqrt(rank + 1) for rank in range(len(terms))]
    created = now - timedelta(days=30)
    yesterday = (now - timedelta(days=1)).date().isoformat()
    rows: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []
    keyword_counts = []
    start = time.perf_counter()
    with engine.begin() as conn:
        for i in range(subscribers):
            keywords = parse_keywords(", ".join(rng.choices(terms, weights, k=rng.randint(3, 8))))
            keyword_counts.append(len(keywords))
            rows.append(
                {
                    "email": f"reader{i:06d}@example.org",
                    "status": "active",
                    "keywords": list(keywords),
                    "exclude": [rng.choice(terms)] if rng.random() < 0.1 else [],
                    "frequency": "weekly" if rng.random() < 0.05 else "daily",
                    "weekday": rng.randrange(7),
                    "send_hour": 7,
                    "timezone": "UTC",
                    "max_papers": rng.choice((5, 10, 10, 20)),
                    "token_version": 1,
                    "bounce_count": 0,
                    "created_at": created,
                    "updated_at": created,
                    "confirmed_at": created,
                }
            )
            if len(rows) == 10_000:
                conn.execute(table_of(Subscriber).insert(), rows)
                rows = []
        if rows:
            conn.execute(table_of(Subscriber).insert(), rows)
        for sid in range(1, subscribers + 1):
            if rng.random() < seen:
                sent += [
                    {"subscriber_id": sid, "paper_id": pid, "edition": yesterday, "sent_at": now}
                    for pid in rng.sample(paper_ids, 20)
                ]
            if len(sent) >= 50_000:
                conn.execute(table_of(SentPaper).insert(), sent)
                sent = []
        if sent:
            conn.execute(table_of(SentPaper).insert(), sent)
    engine.dispose()
    with closing(sqlite3.connect(db)) as conn:
        sent_rows = conn.execute("SELECT count(*) FROM sentpaper").fetchone()[0]
        n_papers = conn.execute("SELECT count(*) FROM paper").fetchone()[0]
    return config, {
        "papers": n_papers,
        "subscribers": subscribers,
        "keywords": sum(keyword_counts) / max(len(keyword_counts), 1),
        "vocabulary": len(terms),
        "sent_rows": sent_rows,
        "seconds": time.perf_counter() - start,
        "db_mb": db.stat().st_size / 1e6,
    }


def run_mails(config: Path, workdir: Path, n: int, seed: int) -> list[Mail]:
    """``n`` of the digests the run will send: a random sample of its readers, planned, ranked,
    rendered and built by digest itself on a copy of the database (which the run never sees).

    The sink's cost grows with a message's lines, and the run's digests (5, 10 or 20 papers)
    are longer on average than send_speed's 10-paper ones: its ceiling on its own messages is
    the one that bounds it.
    """
    from digest import delivery
    from digest.delivery.compose import Composing, EditionCache, compose_chunk, due_deliveries
    from digest.render import Renderer

    copy = workdir / "ceiling-copy.db"
    with (
        closing(sqlite3.connect(workdir / "subscribers.db")) as src,
        closing(sqlite3.connect(copy)) as dst,
    ):
        src.backup(dst)
    env = {"DIGEST_SECRET_KEY": "b" * 40, "DIGEST_DATABASE_URL": f"sqlite:///{copy}"}
    settings = load_settings(config, env=env, base_dir=workdir)
    engine = make_engine(settings.database.url)
    with closing(sqlite3.connect(copy)) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM subscriber WHERE status = 'active'")]
    now = utcnow()
    delivery.plan(engine, settings, now=now, subscriber_ids=random.Random(seed).sample(ids, n))
    renderer = Renderer.create(snippet_chars=settings.digest.snippet_chars)
    composing = Composing(
        engine=engine, settings=settings, renderer=renderer, cache=EditionCache(engine, settings)
    )
    mails = []
    while ids := delivery.claim_ids(engine, settings, owner="bench", now=now):
        chunk = due_deliveries(engine, ids)
        for job in compose_chunk(composing, chunk, delivery.SendReport(), now=now):
            mails.append(Mail(to=job.to_addr, data=job.data))
    engine.dispose()
    copy.unlink()
    return mails


def rss_mb(pid: int) -> float:
    """The current resident set size of ``pid`` in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """The RSS of ``pid`` and of its child processes (the composing process), in MB."""
    children: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return rss_mb(pid) + sum(rss_mb(c) for c in children)


def summarise_pyspy(path: Path, top: int = 25) -> None:
    """Self and total sample shares per function of a py-spy raw (collapsed) profile."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [
            f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] if " (" in f else f
            for f in stack.split(";")
        ]
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"py-spy: {samples} samples of CPU over all threads (idle excluded)")
    print("  self %  total %  function")
    for frame, n in own.most_common(top):
        print(f"  {100 * n / samples:6.1f}  {100 * total[frame] / samples:7.1f}  {frame}")


def main() -> None:
    """Build the population, run `digest run` into the sink, print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--papers", type=int, default=1_000)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--seen", type=float, default=0.3, help="fraction with a sent history")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="keep the database here (default: a temp dir)")
    parser.add_argument("--py-spy", type=Path, help="record the run with py-spy into this file")
    parser.add_argument("--ceiling-messages", type=int, default=2000)
    args = parser.parse_args()
    print("$ " + shlex.join([".venv/bin/python", "bench/run_scale.py", *sys.argv[1:]]))

    tmp = None
    if args.workdir:
        workdir = args.workdir.resolve()
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        workdir = Path(tmp.name)
    config, pop = build_population(
        workdir,
        subscribers=args.subscribers,
        papers=args.papers,
        seen=args.seen,
        seed=args.seed,
    )
    print(
        f"population: {pop['subscribers']:,} subscribers ({pop['keywords']:.1f} keywords each on "
        f"average, vocabulary {pop['vocabulary']:,}), {pop['papers']:,} papers, "
        f"{pop['sent_rows']:,} already-sent rows; built in {pop['seconds']:.0f} s, "
        f"{pop['db_mb']:.0f} MB"
    )
    mails = run_mails(config, workdir, args.ceiling_messages, args.seed)
    synthetic = build_mails(args.ceiling_messages)
    with SinkProcess() as sink:
        ceiling_before = sink_ceiling(sink, mails, args.connections)
        synthetic_before = sink_ceiling(sink, synthetic, args.connections)
        base = sink.counts()[0]  # messages the sink had before the run
        sink_cpu = sink.cpu_seconds()
        with config.open("a") as fh:
            fh.write(
                f'\n[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
                f"connections = {args.connections}\n"
            )
        env = {**os.environ, "DIGEST_SECRET_KEY": "b" * 40}
        digest = str(Path(sys.executable).parent / "digest")
        cmd = [digest, "--config", str(config), "run"]
        log = workdir / "run.log"
        samples: list[tuple[float, float, int]] = []
        with log.open("wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=out)
            spy = None
            if args.py_spy:
                spy = subprocess.Popen(
                    [
                        _py_spy(),
                        "record",
                        "--threads",
                        "--subprocesses",
                        "--rate",
                        "50",
                        "--format",
                        "raw",
                        "--nonblocking",
                        "-o",
                        str(args.py_spy.resolve()),
                        "--pid",
                        str(proc.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.2):
                    samples.append(
                        (
                            time.perf_counter() - start,
                            tree_rss_mb(proc.pid),
                            sink.counts()[0] - base,
                        )
                    )

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            stop.set()
            sampler.join()
            if spy is not None:
                spy.wait(timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"digest run failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
        received = sink.counts()[0] - base
        sink_cpu = sink.cpu_seconds() - sink_cpu
        ceiling_after = sink_ceiling(sink, mails, args.connections)
        synthetic_after = sink_ceiling(sink, synthetic, args.connections)
        ceiling = (ceiling_before + ceiling_after) / 2
    with closing(sqlite3.connect(workdir / "subscribers.db")) as conn:
        statuses = dict(
            conn.execute("SELECT status, count(*) FROM delivery GROUP BY status").fetchall()
        )
    sent = statuses.get("sent", 0)
    first = next((t for t, _, n in samples if n > 0), 0.0)
    last = next((t for t, _, n in samples if n >= received), wall)
    send_phase = max(last - first, 1e-9)
    peak = usage.ru_maxrss / 1024
    print(
        f"command: {shlex.join(['digest', '--config', 'CONFIG', 'run'])}, {args.connections} "
        "SMTP connections, into a counting aiosmtpd sink in another process"
    )
    print(f"deliveries: {statuses}; the sink received {received:,}")
    print(
        f"wall time            {wall:8.1f} s  (first message at {first:.1f} s: start-up, "
        f"ingest, plan, first chunk)"
    )
    print(f"send phase           {send_phase:8.1f} s  {received / send_phase:7.0f} messages/s")
    print(f"overall              {received / wall:17.0f} messages/s")
    print(
        f"sink ceiling         {ceiling:17.0f} messages/s (plain smtplib x{args.connections}, "
        f"{len(mails)} of the run's own digests, {_size(mails)}, same sink: "
        f"{ceiling_before:.0f} before the run, {ceiling_after:.0f} after)"
    )
    print(
        f"  on 10-paper ones   {(synthetic_before + synthetic_after) / 2:17.0f} messages/s "
        f"(send_speed's {len(synthetic)} digests, {_size(synthetic)}: {synthetic_before:.0f} "
        f"before, {synthetic_after:.0f} after; the ceiling of earlier reports)"
    )
    print(f"send phase / ceiling {received / send_phase / ceiling:17.0%}")
    command_cpu = usage.ru_utime + usage.ru_stime
    per_message = command_cpu / max(received, 1) * 1e3
    sink_per_message = sink_cpu / max(received, 1) * 1e3
    print(
        f"CPU of digest run    {command_cpu:8.1f} s  ({per_message:.2f} ms a message; user "
        f"{usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s)"
    )
    print(
        f"CPU of the sink      {sink_cpu:8.1f} s  ({sink_per_message:.2f} ms a message, "
        "over the run)"
    )
    print(
        f"command / sink CPU   {per_message / max(sink_per_message, 1e-9):17.0%} (on two cores "
        "the sink bounds the run when the command costs no more CPU a message than it does: "
        "a figure the machine's speed moves less than rates)"
    )
    print(f"peak RSS             {peak:8.0f} MB  (ru_maxrss of `digest run`: its largest process)")
    print(
        f"peak RSS, together   {max((r for _, r, _ in samples), default=0):8.0f} MB  "
        "(`digest run` and its composing process, sampled every 0.2 s)"
    )
    marks = []
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        at = next(((t, r) for t, r, n in samples if n >= frac * received), None)
        if at:
            marks.append(f"{frac:.0%} sent: {at[1]:.0f} MB")
    print("RSS along the run    " + ", ".join(marks) + " (processes together)")
    if sent != received:
        print(f"MISMATCH: {sent} recorded as sent, {received} received")
    if args.py_spy and args.py_spy.exists():
        summarise_pyspy(args.py_spy)
    if tmp is not None:
        tmp.cleanup()


def _size(mails: Sequence[Mail]) -> str:
    size = sum(len(m.data) for m in mails) / max(len(mails), 1)
    lines = sum(m.data.count(b"\n") for m in mails) / max(len(mails), 1)
    return f"{size / 1000:.1f} kB and {lines:.0f} lines on average"


def sink_ceiling(sink: SinkProcess, mails: Sequence[Mail], connections: int) -> float:
    """messages/s of plain smtplib sending pre-built digests into ``sink``."""
    before = sink.counts()[0]
    t0 = time.perf_counter()
    send_baseline(sink.port, mails, connections)
    rate = len(mails) / (time.perf_counter() - t0)
    if sink.counts()[0] - before != len(mails):
        raise RuntimeError("the sink lost messages while measuring its ceiling")
    return rate


def _py_spy() -> str:
    found = shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"
    if not Path(found).exists():
        raise SystemExit("--py-spy needs py-spy on PATH (pip install py-spy)")
    return found


if __name__ == "__main__":
    main()
