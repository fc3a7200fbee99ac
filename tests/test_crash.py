"""Crash safety: a sending process is SIGKILLed at random points many times; nothing is lost.

The only duplicates allowed are messages in flight at a kill (sent, but not yet recorded): at
most RECORD_WINDOW per SMTP connection per kill. The test counts both and prints them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from digest import subscriptions
from digest.config import load_settings
from digest.db import make_engine
from digest.delivery import RECORD_WINDOW
from digest.ingest import SourceSpec, ingest
from digest.models import Delivery

READERS = 300
CONNECTIONS = 2
LEASE = 2.0
KILL_ROUNDS = 10
TOPICS = [
    "language models",
    "training",
    "diffusion",
    "inference",
    "quantization",
    "dataset",
    "learning",
]


def test_sigkill_at_random_points_loses_nothing(
    tmp_path: Path, shared: Path, smtp_server: Any
) -> None:
    controller, handler = smtp_server
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path}/subscribers.db"
[smtp]
host = "127.0.0.1"
port = {controller.port}
security = "none"
connections = {CONNECTIONS}
[delivery]
lease_seconds = {LEASE}
rate_per_second = 150.0
"""
    )
    env = {**os.environ, "DIGEST_SECRET_KEY": "k" * 40}
    settings = load_settings(config, env=env, base_dir=tmp_path)
    engine = make_engine(settings.database.url)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    rng = random.Random(20261122)
    for i in range(READERS):
        kws = ", ".join(rng.sample(TOPICS, 2))
        subscriptions.add(
            engine, f"reader{i:03d}@example.org", subscriptions.make_interests(kws, max_papers=3)
        )

    digest = [str(Path(sys.executable).parent / "digest"), "--config", str(config), "send"]
    kills = 0
    for attempt in range(KILL_ROUNDS + 5):
        log = tmp_path / "send.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(digest, cwd=tmp_path, env=env, stdout=out, stderr=out)
        if attempt < KILL_ROUNDS:
            # Startup takes about a second; the send itself a few: kill anywhere in there.
            time.sleep(rng.uniform(0.5, 3.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                time.sleep(LEASE + 0.2)  # the dead sender's lease runs out
                continue
        assert proc.wait(timeout=300) == 0, log.read_text()
        if not _outstanding(engine):
            break
    else:
        raise AssertionError("the run never completed")

    with Session(engine) as session:
        rows = session.exec(select(Delivery)).all()
    emails = {s.id: s.email for s in subscriptions.listing(engine)}
    statuses = Counter(d.status for d in rows)
    received = Counter(r for e in handler.envelopes for r in e.rcpt_tos)
    sent = {emails[d.subscriber_id] for d in rows if d.status == "sent"}
    lost = sent - set(received)
    duplicates = sum(n - 1 for n in received.values())
    print(
        f"\ncrash test: {kills} kills, {statuses}, {len(received)} readers got mail, "
        f"{duplicates} duplicate(s), {len(lost)} lost"
    )
    assert kills >= 3, "the test must actually kill senders mid-run"
    assert len(rows) == READERS and set(statuses) <= {"sent", "skipped"}
    assert statuses["sent"] > READERS // 2
    assert not lost, f"recorded as sent but never received: {sorted(lost)[:5]}"
    assert set(received) == sent, "mail only to readers recorded as sent"
    assert duplicates <= kills * CONNECTIONS * RECORD_WINDOW


def _outstanding(engine: Any) -> int:
    with Session(engine) as session:
        return len(
            session.exec(
                select(Delivery.id).where(Delivery.status.in_(["queued", "sending", "failed"]))
            ).all()
        )  # type: ignore[attr-defined]
