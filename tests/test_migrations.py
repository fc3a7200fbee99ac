"""Schema migrations: a release's database upgrades with its rows, the revisions equal the models.

tests/data/migrations/ holds a database made by digest 0.1.0 (and the DDL that release sent to
PostgreSQL); README.md there says how to add the next release's.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from digest import schema, subscriptions
from digest.cli import main
from digest.db import make_engine, read_revision
from digest.errors import SchemaError, TooManyRequests
from digest.migrations import BASELINE, HEAD, RELEASE_0_1_0
from digest.models import Delivery, Paper, Run, SentPaper, Source, Subscriber

DATA = Path(__file__).parent / "data" / "migrations"
RELEASE_DB = DATA / "digest-0.1.0.db"
RELEASE_PG_DDL = DATA / "digest-0.1.0-postgresql.sql"
# The 0.1.0 tables in an order their foreign keys allow, and what orders their rows.
TABLES = {
    "paper": "id",
    "source": "id",
    "subscriber": "id",
    "run": "id",
    "delivery": "id",
    "sentpaper": "subscriber_id, paper_id",
}
MODELS: dict[str, Any] = {
    "paper": Paper,
    "source": Source,
    "subscriber": Subscriber,
    "run": Run,
    "delivery": Delivery,
    "sentpaper": SentPaper,
}
FUTURE = "ffffffffffff"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def release_sqlite(tmp_path: Path) -> str:
    """A copy of the database digest 0.1.0 made, on SQLite."""
    path = tmp_path / "release.db"
    shutil.copyfile(RELEASE_DB, path)
    return sqlite_url(path)


@pytest.fixture
def release_postgres(pg_url: str) -> str:
    """A PostgreSQL database as digest 0.1.0 made it (its DDL), holding the SQLite file's rows."""
    engine = create_engine(pg_url)
    source = sqlite3.connect(RELEASE_DB)
    try:
        with engine.begin() as conn:
            for statement in RELEASE_PG_DDL.read_text(encoding="utf-8").split(";\n"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
            # SQLite keeps UTC times without a zone: read them as UTC.
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
            for table, order in TABLES.items():
                cursor = source.execute(f"SELECT * FROM {table} ORDER BY {order}")
                names = ", ".join(f'"{d[0]}"' for d in cursor.description)
                marks = ", ".join(["%s"] * len(cursor.description))
                conn.exec_driver_sql(
                    f"INSERT INTO {table} ({names}) VALUES ({marks})", cursor.fetchall()
                )
                if order == "id":  # as if the rows had been inserted one by one
                    conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
    finally:
        source.close()
        engine.dispose()
    return pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "new.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    """Engines a test makes, disposed at the end."""
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def raw_rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the 0.1.0 tables, as the driver gives it, in 0.1.0's columns only."""
    out = {}
    with engine.connect() as conn:
        for table, order in TABLES.items():
            rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}")).mappings()
            out[table] = [{k: v for k, v in r.items() if k in RELEASE_0_1_0[table]} for r in rows]
    return out


def model_rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the 0.1.0 tables read through the models, in 0.1.0's columns only."""
    out = {}
    with Session(engine) as session:
        for table, model in MODELS.items():
            order = [col(getattr(model, c.strip())) for c in TABLES[table].split(",")]
            rows = session.exec(select(model).order_by(*order)).all()
            out[table] = [
                {k: v for k, v in r.model_dump().items() if k in RELEASE_0_1_0[table]} for r in rows
            ]
    return out


def check_release_values(rows: dict[str, list[dict[str, Any]]]) -> None:
    """The values make_release_db.py wrote, read back through the models."""
    assert {t: len(r) for t, r in rows.items()} == {
        "paper": 4,
        "source": 2,
        "subscriber": 4,
        "run": 3,
        "delivery": 6,
        "sentpaper": 2,
    }
    paper = rows["paper"][0]
    assert paper["authors"] == ["Ada Lovelace", "Zoë Ünal", "李雷"]
    assert paper["sources"] == ["hf-daily", "arxiv-cs-lg"]
    assert paper["abstract"] == 'We quantize "everything".\nA second line, with ü and 数据.'
    assert paper["published_at"] == datetime(2026, 11, 18, 23, 0, tzinfo=UTC)
    assert (paper["upvotes"], paper["comments"]) == (42, 3)
    assert rows["paper"][1]["first_seen_at"] == datetime(2026, 11, 20, 6, 1, 2, 345678, tzinfo=UTC)
    assert rows["paper"][1]["authors"] == [] and rows["paper"][1]["published_at"] is None
    assert [s["status"] for s in rows["subscriber"]] == [
        "active",
        "pending",
        "unsubscribed",
        "bounced",
    ]
    assert rows["subscriber"][0]["exclude"] == ["survey"]
    assert rows["subscriber"][3]["keywords"][-1] == "Überwachung"
    assert [d["status"] for d in rows["delivery"]] == [
        "sent",
        "bounced",
        "failed",
        "skipped",
        "sending",
        "queued",
    ]
    assert rows["delivery"][0]["paper_keys"] == ["arxiv:2411.01234", "doi:10.1000/xyz-123"]
    assert rows["delivery"][4]["lease_owner"] == "host-a:1234"
    assert [(s["subscriber_id"], s["paper_id"]) for s in rows["sentpaper"]] == [(1, 1), (1, 2)]
    assert rows["run"][0]["counts"] == {"new": 3, "updated": 1, "unchanged": 0, "skipped": 0}
    assert rows["run"][2]["finished_at"] is None
    assert rows["source"][1]["last_error"] == "HTTP 503 from https://example.org/feed.xml"


def check_added_columns(engine: Engine) -> None:
    """The columns later revisions added, with their values for the rows already there."""
    with Session(engine) as session:
        assert [s.last_cut for s in session.exec(select(Source).order_by(col(Source.id)))] == [
            0,
            0,
        ]  # bcac60afd2fe


def check_usable(url: str, engines: list[Engine]) -> None:
    """The upgraded database works for the code: commands open it, new rows get new ids, and the
    tables the later revisions add (the subscribe requests the caps count) are there."""
    engine = make_engine(url)
    engines.append(engine)
    row = subscriptions.add(engine, "new@example.org", subscriptions.make_interests("diffusion"))
    assert row.id == 5
    origin = subscriptions.Origin(channel="web", key="192.0.2.1", per_hour=1, total_per_hour=9)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    outgoing = subscriptions.request(
        engine,
        "newer@example.org",
        subscriptions.make_interests("x"),
        now=now,
        interval_seconds=300,
        origin=origin,
    )
    assert outgoing is not None and outgoing.subscriber_id == 6
    with pytest.raises(TooManyRequests):
        subscriptions.claim_request(engine, origin, now=now)
    assert subscriptions.request_counts(engine, now=now).total == 1


def test_release_database_upgrades_on_sqlite_with_every_row(
    release_sqlite: str, engines: list[Engine]
) -> None:
    plain = create_engine(release_sqlite)
    engines.append(plain)
    before = raw_rows(plain)
    with pytest.raises(SchemaError, match="digest db upgrade"):
        make_engine(release_sqlite)

    engine = make_engine(release_sqlite, check_schema=False)
    engines.append(engine)
    done = schema.upgrade(engine)
    assert (done.before.state, done.before.revision, done.after) == ("release-0.1.0", None, HEAD)
    with engine.connect() as conn:
        assert read_revision(conn) == HEAD
    # The stored values themselves, byte for byte as SQLite holds them, and as the code reads them.
    assert raw_rows(plain) == before
    check_release_values(model_rows(engine))
    check_added_columns(engine)
    check_usable(release_sqlite, engines)


def test_release_database_upgrades_on_postgresql_with_every_row(
    release_sqlite: str, release_postgres: str, engines: list[Engine]
) -> None:
    plain = create_engine(release_postgres)
    engines.append(plain)
    before = raw_rows(plain)
    with pytest.raises(SchemaError, match="digest db upgrade"):
        make_engine(release_postgres)

    engine = make_engine(release_postgres, check_schema=False)
    engines.append(engine)
    done = schema.upgrade(engine)
    assert (done.before.state, done.after) == ("release-0.1.0", HEAD)
    assert raw_rows(plain) == before
    rows = model_rows(engine)
    check_release_values(rows)
    check_added_columns(engine)
    # The same rows as the upgraded SQLite file, value for value.
    on_sqlite = make_engine(release_sqlite, check_schema=False)
    engines.append(on_sqlite)
    schema.upgrade(on_sqlite)
    assert rows == model_rows(on_sqlite)
    check_usable(release_postgres, engines)


def test_a_new_database_is_created_at_head(empty_url: str, engines: list[Engine]) -> None:
    engine = make_engine(empty_url)
    engines.append(engine)
    with engine.connect() as conn:
        assert read_revision(conn) == HEAD
    assert set(inspect(engine).get_table_names()) == {*SQLModel.metadata.tables, "alembic_version"}
    assert schema.status(engine).state == "current"
    again = make_engine(empty_url)  # the second time: used as it is
    engines.append(again)
    assert schema.upgrade(again).applied == ()


def describe(engine: Engine) -> dict[str, Any]:
    """Everything the database says about its tables, in a comparable form."""
    inspector = inspect(engine)
    out: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table),
            "fks": sorted(
                (f["name"] or "", f["constrained_columns"], f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"] or "", i["column_names"], i["unique"])
                for i in inspector.get_indexes(table)
            ),
            "uniques": sorted(
                (u["name"] or "", u["column_names"])
                for u in inspector.get_unique_constraints(table)
            ),
        }
    return out


def model_differences(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the models."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def test_the_revisions_make_the_schema_of_the_models(
    empty_url: str, tmp_path: Path, request: pytest.FixtureRequest, engines: list[Engine]
) -> None:
    """Running every revision on an empty database gives exactly what a new database gets
    (create_all, stamped at HEAD), and neither differs from the models: a change to the models
    without a revision fails here."""
    by_revisions = make_engine(empty_url, check_schema=False)
    engines.append(by_revisions)
    with by_revisions.connect() as conn:
        command.upgrade(schema.alembic_config(conn), "head")
        conn.commit()
    if empty_url.startswith("sqlite"):
        other = sqlite_url(tmp_path / "created.db")
    else:
        other = _other_pg_database(empty_url, "b")
        request.addfinalizer(lambda: _drop_pg_database(empty_url, other))
    created = make_engine(other)
    engines.append(created)
    assert model_differences(by_revisions) == []
    assert model_differences(created) == []
    assert describe(by_revisions) == describe(created)
    with by_revisions.connect() as conn:
        assert read_revision(conn) == HEAD


def _other_pg_database(url: str, suffix: str) -> str:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"{url.rsplit('/', 1)[1]}_{suffix}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def _drop_pg_database(url: str, other: str) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{other.rsplit("/", 1)[1]}" WITH (FORCE)')
    admin.dispose()


def test_a_database_at_each_older_revision_upgrades_to_the_models(
    empty_url: str, tmp_path: Path, request: pytest.FixtureRequest, engines: list[Engine]
) -> None:
    """Made by running the revisions up to an older one, then refused, then upgraded. (While
    the baseline is the only revision there is no older one; every new revision adds one.)"""
    older = [r.id for r in schema.history() if r.id != HEAD]
    for revision in older:
        if empty_url.startswith("sqlite"):
            url = sqlite_url(tmp_path / f"{revision}.db")
        else:
            url = _other_pg_database(empty_url, revision)
            request.addfinalizer(lambda url=url: _drop_pg_database(empty_url, url))
        engine = make_engine(url, check_schema=False)
        engines.append(engine)
        with engine.connect() as conn:
            command.upgrade(schema.alembic_config(conn), revision)
            conn.commit()
        with pytest.raises(SchemaError, match=f"revision {revision}.*digest db upgrade"):
            make_engine(url)
        done = schema.upgrade(engine)
        assert (done.before.state, done.before.revision) == ("behind", revision)
        assert done.applied[-1] == HEAD and revision not in done.applied
        assert model_differences(engine) == []


def test_head_is_the_one_newest_revision() -> None:
    scripts = ScriptDirectory.from_config(schema.alembic_config())
    assert scripts.get_heads() == [HEAD], "set digest.migrations.HEAD to the new revision"
    assert scripts.get_bases() == [BASELINE]
    assert [r.id for r in schema.history()][0] == HEAD


# ---------------------------------------------------------------------------------------------
# the command line


def config_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[database]\nurl = "{url}"\n[sink]\nmaildir = "{tmp_path}/mail"\n'
        f'[digest]\npreviews_dir = "{tmp_path}/previews"\n',
        encoding="utf-8",
    )
    return path


def cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["--config", str(config), *args], env={"DIGEST_SECRET_KEY": "k" * 40}
    )
    return result.exit_code, result.output


# Every command that opens the database, with arguments that would otherwise work.
COMMANDS = [
    ("ingest", "bundled:sample-papers.txt"),
    ("sources",),
    ("papers",),
    ("rank", "quantization"),
    ("subscribe", "x@example.org", "-k", "llm"),
    ("unsubscribe", "ada@example.org"),
    ("subscribers",),
    ("send", "--dry-run"),
    ("preview", "ada@example.org"),
    ("demo",),
    ("status",),
    ("serve", "--port", "1"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_command_on_a_release_database_says_to_upgrade(
    release_sqlite: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    config = config_for(tmp_path, release_sqlite)
    code, out = cli(config, *args)
    assert code == 1
    assert out.strip().splitlines() == [
        "Error: this database was made by digest 0.1.0 and has no schema version: "
        "run `digest db upgrade` to bring it up to date (its rows are kept)"
    ]


def test_the_worker_on_a_release_database_exits_with_one_line(
    release_sqlite: str, tmp_path: Path
) -> None:
    """The installed command, in its own process (the worker takes signals over)."""
    config = config_for(tmp_path, release_sqlite)
    digest = Path(sys.executable).parent / "digest"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    result = subprocess.run(
        [str(digest), "--config", str(config), "worker", "--once"],
        cwd=tmp_path,
        env={**env, "DIGEST_SECRET_KEY": "k" * 40},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: this database was made by digest 0.1.0 and has no schema version: "
        "run `digest db upgrade` to bring it up to date (its rows are kept)"
    ]


def test_db_commands_upgrade_a_release_database(release_sqlite: str, tmp_path: Path) -> None:
    config = config_for(tmp_path, release_sqlite)
    assert cli(config, "db", "current") == (
        0,
        "No schema version: made by digest 0.1.0. Run `digest db upgrade`.\n",
    )
    code, out = cli(config, "db", "history")
    assert code == 0
    assert out.splitlines()[-1].startswith(f"{BASELINE}  baseline: the schema of digest 0.1.0  (")
    assert out.splitlines()[-1].endswith("the database: digest 0.1.0, no version)")
    code, out = cli(config, "db", "upgrade")
    assert code == 0
    assert out.startswith(
        "Recognised a database made by digest 0.1.0 (no schema version): stamped it at "
        f"revision {BASELINE}"
    )
    assert f"{HEAD} (head)" in out and out.endswith("Every row is kept.\n")
    assert cli(config, "db", "current") == (0, f"{HEAD} (head): up to date.\n")
    code, out = cli(config, "db", "history")
    assert out.splitlines()[0].startswith(f"{HEAD}  ") and "(head, current)" in out.splitlines()[0]
    assert cli(config, "db", "upgrade") == (
        0,
        f"The database is at revision {HEAD} (head): nothing to do.\n",
    )
    code, out = cli(config, "subscribers")
    assert code == 0 and "4 subscriber(s)." in out


def test_db_upgrade_creates_a_new_database(tmp_path: Path) -> None:
    config = config_for(tmp_path, sqlite_url(tmp_path / "new.db"))
    assert cli(config, "db", "current")[1].startswith("No tables yet")
    assert cli(config, "db", "upgrade") == (
        0,
        f"Created a new database at revision {HEAD} (head).\n",
    )
    assert cli(config, "db", "current") == (0, f"{HEAD} (head): up to date.\n")


def test_a_database_from_a_newer_digest_is_refused(tmp_path: Path, engines: list[Engine]) -> None:
    url = sqlite_url(tmp_path / "future.db")
    engine = make_engine(url)
    engines.append(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    config = config_for(tmp_path, url)
    too_old = (
        f"Error: this database's schema is at revision {FUTURE}, which this digest does not "
        "know: this digest is older than the database; run the newer digest that upgraded it"
    )
    for args in (("subscribers",), ("db", "upgrade")):
        code, out = cli(config, *args)
        assert (code, out.strip().splitlines()) == (1, [too_old]), args
    assert cli(config, "db", "current") == (
        0,
        f"{FUTURE}: unknown to this digest (at {HEAD}): the database is newer.\n",
    )
    with engine.connect() as conn:
        assert read_revision(conn) == FUTURE


def test_tables_that_are_not_a_release_are_not_stamped(
    release_sqlite: str, engines: list[Engine]
) -> None:
    engine = make_engine(release_sqlite, check_schema=False)
    engines.append(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE paper DROP COLUMN comments")
        conn.exec_driver_sql("ALTER TABLE run ADD COLUMN host VARCHAR")
    with pytest.raises(SchemaError) as caught:
        schema.upgrade(engine)
    assert str(caught.value) == (
        "this database has no schema version and its tables are not those digest 0.1.0 made "
        "(paper lacks comments; run has unknown host): digest cannot tell how to upgrade it"
    )
    with engine.connect() as conn:
        assert read_revision(conn) is None


# ---------------------------------------------------------------------------------------------
# processes


def test_processes_creating_one_new_database_at_once(empty_url: str, tmp_path: Path) -> None:
    """Each process makes the engine for the same new database at the same moment."""
    go = tmp_path / "go"
    program = (
        "import os, sys, time\n"
        "from digest.db import make_engine\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "make_engine(sys.argv[1]).dispose()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", program, empty_url, str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), errors
    engine = make_engine(empty_url, check_schema=False)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                (HEAD,)
            ]
    finally:
        engine.dispose()


def test_commands_start_without_alembic(tmp_path: Path) -> None:
    """Alembic is imported by `digest db` and an out-of-date database only, not on every start."""
    url = sqlite_url(tmp_path / "new.db")
    program = (
        "import sys\n"
        "import digest.cli\n"
        "from digest.db import make_engine\n"
        "make_engine(sys.argv[1]).dispose()  # created\n"
        "make_engine(sys.argv[1]).dispose()  # checked\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, url], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr


def test_the_migrations_are_found_through_the_package(tmp_path: Path) -> None:
    """From another directory, through the installed command: nothing depends on the cwd."""
    digest = Path(sys.executable).parent / "digest"
    config = config_for(tmp_path, sqlite_url(tmp_path / "x.db"))
    result = subprocess.run(
        [str(digest), "--config", str(config), "db", "history"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"{BASELINE}  baseline")
    assert schema.MIGRATIONS.parent == Path(schema.__file__).parent
