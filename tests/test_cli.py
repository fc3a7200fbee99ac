"""The command line, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

from click.testing import CliRunner

from digest.cli import main

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
    for name, command in main.commands.items():
        assert command.help and command.help.strip(), name
        assert f"digest {name}" in readme, f"README does not show `digest {name}`"
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "--config" in result.output, name


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
