"""The command line, as a user types it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import event, text
from sqlalchemy.pool import Pool

from digest.cli import main
from digest.db import make_engine

ROOT = Path(__file__).resolve().parent.parent


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["--config", str(config), *args], env={"DIGEST_SECRET_KEY": "k" * 40}
    )
    return result.exit_code, result.output


def config_in(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""[database]
url = "sqlite:///{tmp_path}/subscribers.db"
[sink]
maildir = "{tmp_path}/mail"
[digest]
previews_dir = "{tmp_path}/previews"
""",
        encoding="utf-8",
    )
    return path


def test_demo_from_a_bare_directory(tmp_path: Path) -> None:
    """The quick start's main job: no config file, no network, the installed console script."""
    digest = Path(sys.executable).parent / "digest"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    result = subprocess.run(
        [str(digest), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "subscribers.db").is_file()
    assert (tmp_path / ".secret_key").is_file()
    written = sorted((tmp_path / "previews").glob("demo-*.html"))
    assert len(written) >= 3, result.stdout
    for path in written:
        html = path.read_text(encoding="utf-8")
        assert "<table" in html and 'style="' in html
        assert str(path.resolve()) in result.stdout
    mails = list((tmp_path / "mail" / "new").iterdir())
    assert len(mails) == len(written)
    msg = message_from_bytes(mails[0].read_bytes(), policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"

    again = subprocess.run(
        [str(digest), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "mail" / "new").iterdir())) == len(mails), (
        "a second demo sends nothing twice"
    )


def test_subscribe_validates_and_refuses_duplicates(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    code, out = run(
        config,
        "subscribe",
        "Ada@Example.ORG",
        "--keywords",
        "llm inference, quantization",
        "--exclude",
        "survey",
    )
    assert code == 0, out
    assert "ada@example.org" in out
    code, out = run(config, "subscribe", "ada@example.org", "--keywords", "x")
    assert code == 1 and "already subscribed" in out
    code, out = run(config, "subscribe", "not-an-address", "--keywords", "x")
    assert code == 1 and "not a valid email address" in out
    code, out = run(config, "subscribe", "b@example.org", "--keywords", " , ;")
    assert code == 1 and "keyword" in out
    code, out = run(config, "subscribers", "--json")
    rows = json.loads(out.split("\n1 subscriber")[0]) if "subscriber(s)" in out else json.loads(out)
    assert [r["email"] for r in rows] == ["ada@example.org"]
    assert rows[0]["keywords"] == ["llm inference", "quantization"] and rows[0]["exclude"] == [
        "survey"
    ]
    code, out = run(config, "unsubscribe", "ada@example.org")
    assert code == 0
    code, out = run(config, "subscribers", "--status", "active")
    assert "ada@example.org" not in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--keywords", ", ".join(f"k{i}" for i in range(51))], "at most 50 keywords"),
        (["--keywords", "llm, " + "x" * 300], "at most 100 characters"),
        (["--keywords", "llm", "--exclude", "e" * 101], "at most 100 characters"),
        (["--keywords", "llm", "--max-papers", "60"], "from 1 to 50"),
        (["--keywords", "llm", "--max-papers", "0"], "from 1 to 50"),
    ],
)
def test_subscribe_refuses_input_over_a_limit_in_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    config = config_in(tmp_path)
    code, out = run(config, "subscribe", "ada@example.org", *args)
    assert code == 1
    assert out.startswith("Error: ") and out.strip().count("\n") == 0, out
    assert needle in out
    code, out = run(config, "subscribers")
    assert "ada@example.org" not in out


def test_unsubscribe_acts_by_address(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    run(config, "subscribe", "ada@example.org", "--keywords", "llm")
    engine = make_engine(f"sqlite:///{tmp_path}/subscribers.db")
    with engine.begin() as conn:  # every link Ada holds revoked: the operator needs none
        conn.execute(text("UPDATE subscriber SET token_version = token_version + 1"))
    code, out = run(config, "unsubscribe", "ADA@example.org")
    assert code == 0 and out == "Unsubscribed ada@example.org.\n"
    code, out = run(config, "subscribers", "--status", "unsubscribed")
    assert "ada@example.org" in out
    code, out = run(config, "unsubscribe", "nobody@example.org")
    assert code == 1 and "no subscriber nobody@example.org" in out


def test_a_command_closes_the_connections_it_opened(tmp_path: Path) -> None:
    """Whether it succeeds or fails, a command closes its database connections as it ends,
    rather than leaving them to the garbage collector (Python 3.13 warns of each)."""
    config = config_in(tmp_path)
    opened: list[object] = []
    closed: list[object] = []

    def on_connect(dbapi_connection: object, _record: object) -> None:
        opened.append(dbapi_connection)

    def on_close(dbapi_connection: object, _record: object) -> None:
        closed.append(dbapi_connection)

    event.listen(Pool, "connect", on_connect)
    event.listen(Pool, "close", on_close)
    try:
        assert run(config, "subscribe", "ada@example.org", "--keywords", "llm")[0] == 0
        assert run(config, "subscribe", "ada@example.org", "--keywords", "llm")[0] == 1
        assert run(config, "subscribers")[0] == 0
    finally:
        event.remove(Pool, "connect", on_connect)
        event.remove(Pool, "close", on_close)
    assert opened
    assert {id(c) for c in closed} == {id(c) for c in opened}


def test_ingest_papers_rank_and_preview(tmp_path: Path, shared: Path) -> None:
    config = config_in(tmp_path)
    code, out = run(
        config, "ingest", str(shared / "seeds/daily-papers-a.txt"), str(tmp_path / "missing.txt")
    )
    assert code == 3, out  # one of the two sources failed
    assert "75 new" in out and "missing.txt" in out
    code, out = run(config, "sources")
    assert "cannot read" in out and "75 papers" in out

    code, out = run(config, "papers", "--json")
    listed = json.loads(out[: out.rindex("]") + 1])
    assert len(listed) == 75
    assert {"key", "title", "authors", "url"} <= set(listed[0])

    code, out = run(config, "rank", "quantization, llm inference", "--limit", "5", "--json")
    assert code == 0, out
    ranked = json.loads(out)
    assert 1 <= len(ranked) <= 5
    assert {"key", "title", "score", "matches"} <= set(ranked[0])
    assert ranked[0]["score"] >= ranked[-1]["score"]
    assert any("quantiz" in r["title"].lower() for r in ranked[:3])

    run(config, "subscribe", "ada@example.org", "--keywords", "quantization")
    out_file = tmp_path / "p.html"
    code, out = run(config, "preview", "ada@example.org", "--out", str(out_file))
    assert code == 0, out
    assert "<mark" in out_file.read_text(encoding="utf-8")
    assert not (tmp_path / "mail").exists(), "preview sends nothing"
    code, out = run(config, "send", "--dry-run")
    assert code == 0 and "Would" in out
    code, out = run(config, "send")
    assert code == 0 and "1 sent" in out, out
    code, out = run(config, "mailbox")
    assert "ada@example.org" in out


def test_bad_config_is_a_clean_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nprot = 25\n")
    code, out = run(bad, "subscribers")
    assert code == 1
    assert "prot" in out and str(bad) in out and "Traceback" not in out


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert main.help
    commands: list[tuple[list[str], click.Command]] = []
    for name, command in main.commands.items():
        assert command.help and command.help.strip(), name
        if isinstance(command, click.Group):  # `digest db upgrade`: each subcommand counts
            commands += [([name, sub], c) for sub, c in command.commands.items()]
            assert command.commands, name
        else:
            commands.append(([name], command))
    for path, command in commands:
        name = " ".join(path)
        assert command.help and command.help.strip(), name
        assert f"digest {name}" in readme, f"README does not show `digest {name}`"
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0 and "--config" in result.output, name


def test_help_and_version_load_no_heavy_stack() -> None:
    """`digest --help`, `--version` and each command's help answer without the ranker, the
    feed readers, the templates, the SMTP servers or the web stack."""
    program = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from digest.cli import main\n"
        "for args in (['--help'], ['--version'], *([c, '--help'] for c in main.commands)):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0, args\n"
        "heavy = ('numpy', 'scipy', 'aiosmtpd', 'feedparser', 'premailer', 'starlette', 'jinja2')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_weekday_by_name_as_in_the_mail_command(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    for i, day in enumerate(("friday", "Fri", "4", "fridays")):
        code, out = run(
            config, "subscribe", f"r{i}@example.org", "-k", "llm", "--weekly", "--weekday", day
        )
        assert code == 0, out
    code, out = run(config, "subscribe", "x@example.org", "-k", "llm", "--weekday", "someday")
    assert code == 2 and "not a day of the week" in out
    engine = make_engine(f"sqlite:///{tmp_path}/subscribers.db")
    with engine.connect() as conn:
        days = conn.execute(text("SELECT weekday FROM subscriber")).scalars().all()
    assert days == [4, 4, 4, 4]


def test_a_bad_or_unreachable_database_is_one_line(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    for url, needle in (
        ("nonsense://x", "is not a database URL"),
        ("postgresql+psycopg://u:hunter2@127.0.0.1:1/db", "cannot use the database"),
    ):
        result = CliRunner().invoke(
            main,
            ["--config", str(config), "subscribers"],
            env={"DIGEST_SECRET_KEY": "k" * 40, "DIGEST_DATABASE_URL": url},
        )
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1
        assert needle in result.output and "hunter2" not in result.output


def test_status_tells_what_the_last_ingest_did(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    sample = ROOT / "digest" / "data" / "sample-papers.txt"
    code, out = run(config, "ingest", str(sample))
    assert code == 0, out
    code, out = run(config, "status")
    line = next(x for x in out.splitlines() if x.startswith("Last ingest"))
    assert "1 sources" in line and " new" in line and "nothing" not in line


def test_the_readme_inbound_example_works_as_shown(tmp_path: Path) -> None:
    """The README's `digest inbound &` example, run by bash as a reader would paste it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(digest inbound &.*?)```", readme, re.S)
    assert block is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", "set -m\n" + block[1]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Confirm your subscription" in result.stdout, result.stdout + result.stderr


def test_ingest_exit_codes(tmp_path: Path, shared: Path) -> None:
    config = config_in(tmp_path)
    good = str(shared / "seeds/daily-papers-a.txt")
    missing = str(tmp_path / "missing.txt")
    assert run(config, "ingest", good)[0] == 0
    assert run(config, "ingest", good, missing)[0] == 3
    assert run(config, "ingest", missing, str(ROOT / "README.md"))[0] == 1
    assert run(config, "ingest", "--dry-run", good, missing)[0] == 3
    assert run(config, "ingest", "--dry-run", good)[0] == 0


def test_ingest_dry_run_says_what_would_be_new(tmp_path: Path, shared: Path) -> None:
    config = config_in(tmp_path)
    run(config, "ingest", str(shared / "seeds/daily-papers-a.txt"))
    code, out = run(config, "ingest", "--dry-run", str(shared / "seeds/daily-papers-b.txt"))
    assert code == 0, out
    line = next(x for x in out.splitlines() if "daily-papers-b.txt" in x)
    new, updated = (
        int(line.split(f" would be {w}")[0].rsplit(" ", 1)[1]) for w in ("new,", "updated,")
    )
    assert new > 0 and updated > 0 and new + updated == 88
    assert "nothing was written" in out
    code, out = run(config, "ingest", str(shared / "seeds/daily-papers-b.txt"))
    assert f"{new} new, {updated} updated" in out


def test_run_sends_then_exits_non_zero_when_a_source_failed(tmp_path: Path, shared: Path) -> None:
    config = config_in(tmp_path)
    seed = shared / "seeds/daily-papers-a.txt"
    config.write_text(
        config.read_text()
        + f'[[sources]]\nname = "good"\nlocation = "{seed}"\n'
        + f'[[sources]]\nname = "gone"\nlocation = "{tmp_path / "gone.txt"}"\n',
        encoding="utf-8",
    )
    run(config, "subscribe", "ada@example.org", "--keywords", "quantization")
    code, out = run(config, "run")
    assert "1 sent" in out, out
    assert code == 3


def test_sources_says_a_source_was_cut(tmp_path: Path, shared: Path) -> None:
    config = config_in(tmp_path)
    config.write_text(config.read_text() + "[ingest]\nmax_entries = 30\n", encoding="utf-8")
    code, out = run(config, "ingest", str(shared / "seeds/daily-papers-a.txt"))
    assert code == 0 and "cut at [ingest] max_entries: 45 more entries left out" in out, out
    code, out = run(config, "sources")
    assert "30 papers" in out and "45 more entries left out" in out
    code, out = run(config, "sources", "--json")
    assert json.loads(out)[0]["last_cut"] == 45
