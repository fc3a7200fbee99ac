"""PostgreSQL: the same pipeline as on SQLite, and many workers claiming with SKIP LOCKED."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, select

from digest import delivery, subscriptions
from digest.config import Settings
from digest.db import make_engine, table_of
from digest.ingest import SourceSpec, ingest
from digest.models import Delivery, Paper, Subscriber
from digest.render import Renderer

WORKERS = 4
READERS = 2000


def on_postgres(settings: Settings, url: str, controller: Any) -> Settings:
    return dataclasses.replace(
        settings,
        database=dataclasses.replace(settings.database, url=url),
        smtp=dataclasses.replace(
            settings.smtp, host="127.0.0.1", port=controller.port, security="none"
        ),
    )


def test_pipeline_on_postgres(
    settings: Settings, pg_url: str, shared: Path, smtp_server: Any, request: Any
) -> None:
    controller, handler = smtp_server
    settings = on_postgres(settings, pg_url, controller)
    engine = make_engine(pg_url)
    request.addfinalizer(engine.dispose)
    assert engine.dialect.name == "postgresql"
    seeds = [
        SourceSpec(name=x, location=str(shared / f"seeds/daily-papers-{x}.txt")) for x in "abc"
    ]
    first = ingest(engine, settings, seeds)
    again = ingest(engine, settings, seeds)
    assert [s.found for s in first.sources] == [75, 88, 81]
    assert again.total("new") == 0 and again.total("updated") == 0
    with Session(engine) as session:
        papers = session.exec(select(Paper)).all()
        assert len(papers) == first.total("new")
        assert all(p.first_seen_at.tzinfo is not None for p in papers)

    subscriptions.add(engine, "ada@example.org", subscriptions.make_interests("quantization"))
    subscriptions.add(engine, "bob@example.org", subscriptions.make_interests("mixture of experts"))
    report = delivery.send(engine, settings, renderer=Renderer.create())
    assert (report.sent, report.failed) == (2, 0), report.errors
    assert delivery.send(engine, settings, renderer=Renderer.create()).sent == 0
    assert sorted(r for e in handler.envelopes for r in e.rcpt_tos) == [
        "ada@example.org",
        "bob@example.org",
    ]


def _waiting_on_locks(engine: Any) -> int:
    """How many other sessions wait for a lock (the workers, at the start line)."""
    with engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).scalar_one()
        )


def test_four_workers_send_each_digest_exactly_once(
    settings: Settings, pg_url: str, shared: Path, smtp_server: Any, tmp_path: Path, request: Any
) -> None:
    controller, handler = smtp_server
    settings = on_postgres(settings, pg_url, controller)
    engine = make_engine(pg_url)
    request.addfinalizer(engine.dispose)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    topics = ["language models", "training", "diffusion", "inference", "quantization", "learning"]
    now = datetime.now(UTC)
    rows = [
        {
            "email": f"reader{i:04d}@example.org",
            "status": "active",
            "keywords": [topics[i % len(topics)], topics[(i * 7 + 1) % len(topics)]],
            "exclude": [],
            "frequency": "daily",
            "weekday": 0,
            "send_hour": 7,
            "timezone": "UTC",
            "max_papers": 3,
            "token_version": 1,
            "bounce_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(READERS)
    ]
    with engine.begin() as conn:
        conn.execute(insert(table_of(Subscriber)), rows)
    assert delivery.plan(engine, settings, now=now) == READERS

    # half the workers compose in a second process (claiming ids only), half in their own;
    # chunks of 50: more than the workers' first claims together, so none finds nothing
    configs = []
    for i in range(WORKERS):
        config = tmp_path / f"worker{i}.toml"
        config.write_text(
            f'[database]\nurl = "{pg_url}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {controller.port}\nsecurity = "none"\n'
            "connections = 2\n"
            f"[delivery]\ncompose_process_from = {1 if i % 2 else 0}\nchunk_size = 50\n"
        )
        configs.append(config)
    env = {**os.environ, "DIGEST_SECRET_KEY": settings.secret_key}
    digest = str(Path(sys.executable).parent / "digest")
    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    procs = []
    # The start line: the delivery table stays locked until every worker waits on it, so no
    # worker starts so late that the others have taken everything (as happened under load).
    gate = engine.connect()
    gate.exec_driver_sql("LOCK TABLE delivery IN ACCESS EXCLUSIVE MODE")
    try:
        for config, log in zip(configs, logs, strict=True):
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [digest, "-v", "--config", str(config), "worker", "--once"],
                        cwd=tmp_path,
                        env=env,
                        stdout=out,
                        stderr=out,
                    )
                )
        deadline = time.monotonic() + 120
        while _waiting_on_locks(engine) < WORKERS:
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.1)
    finally:
        gate.rollback()
        gate.close()
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=600) == 0, log.read_text()

    with Session(engine) as session:
        deliveries = session.exec(select(Delivery)).all()
    statuses = Counter(d.status for d in deliveries)
    received = Counter(r for e in handler.envelopes for r in e.rcpt_tos)
    per_worker = [log.read_text().strip().splitlines()[-1] for log in logs]
    print(f"\n4 workers: {statuses}; per worker: {per_worker}")
    assert len(deliveries) == READERS
    assert set(statuses) <= {"sent", "skipped"} and statuses["sent"] > READERS // 2
    assert len(received) == statuses["sent"]
    assert set(received.values()) == {1}, "every subscriber gets exactly one digest"
    texts = [log.read_text() for log in logs]
    assert ["event=compose-process" in text for text in texts] == [i % 2 == 1 for i in range(4)]
    sent_by = [int(m[1]) if (m := re.search(r"(\d+) sent", line)) else 0 for line in per_worker]
    assert sum(sent_by) == statuses["sent"] and all(n > 0 for n in sent_by), per_worker
