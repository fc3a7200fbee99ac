"""Configuration: the documented defaults load, bad input names the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.config import ensure_secret, load_settings
from digest.errors import ConfigError
from digest.resources import default_config_path
from digest.subscriptions import MAX_PAPERS

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_documented_config_equals_built_in_defaults() -> None:
    from_file = load_settings(ROOT / "config.toml", env={}, base_dir="/x")
    assert from_file.database.url == "sqlite:///subscribers.db"
    assert from_file.smtp.host == ""
    assert from_file.sources[0].location == "bundled:sample-papers.txt"
    # Every key the file documents is a real setting (the file loads), and it is the one shipped.
    assert default_config_path().read_text() == (ROOT / "config.toml").read_text()


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\nhots = "mail.example.org"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(path, env={})
    assert "hots" in str(e.value) and str(path) in str(e.value) and "[smtp]" in str(e.value)


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[smpt\]"):
        load_settings(write(tmp_path, "[smpt]\nhost = 'x'\n"), env={})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[smtp]\nport = 'twenty-five'\n", "[smtp] port"),
        ("[smtp]\nport = 70000\n", "[smtp] port"),
        ("[smtp]\nsecurity = 'tls'\n", "[smtp] security"),
        ("[digest]\ntimezone = 'Mars/Olympus'\n", "[digest] timezone"),
        ("[digest]\nmax_papers = 0\n", "[digest] max_papers"),
        ("[digest]\nmax_papers = 100\n", "[digest] max_papers: must be 1-50"),
        ("[database]\nurl = 'subscribers.db'\n", "[database] url"),
        ("[[sources]]\nname = 'x'\n", "location"),
        ("[smtp\nhost = 1", "not valid TOML"),
        ("[web]\nsubscribe_per_client_per_hour = 0\n", "subscribe_per_client_per_hour: must be at"),
        ("[web]\nsubscribe_per_hour = 0\n", "[web] subscribe_per_hour: must be at least 1"),
        ("[web]\nrank_per_client_per_minute = 0\n", "rank_per_client_per_minute: must be at"),
        ("[web]\npending_days = 3\n", "[web] pending_days: must be at least 7, the days a"),
        (
            "[inbound]\nsubscribe_per_domain_per_hour = 0\n",
            "subscribe_per_domain_per_hour: must be at",
        ),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_settings(path, env={})
    assert needle in str(e.value)
    assert str(path) in str(e.value)


def test_max_papers_is_held_to_the_readers_limit(tmp_path: Path) -> None:
    """One limit for papers per digest: the most a reader may choose is the most a default
    may be."""
    settings = load_settings(write(tmp_path, f"[digest]\nmax_papers = {MAX_PAPERS}\n"), env={})
    assert settings.digest.max_papers == MAX_PAPERS == 50
    with pytest.raises(ConfigError, match=f"must be 1-{MAX_PAPERS}"):
        load_settings(write(tmp_path, f"[digest]\nmax_papers = {MAX_PAPERS + 1}\n"), env={})


def test_password_is_refused_in_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DIGEST_SMTP_PASSWORD"):
        load_settings(write(tmp_path, "[smtp]\npassword = 'hunter2'\n"), env={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[smtp]\nhost = 'a.example'\nport = 25\n")
    settings = load_settings(
        path,
        env={
            "DIGEST_SMTP_HOST": "relay.example",
            "DIGEST_SMTP_PORT": "2525",
            "DIGEST_DATABASE_URL": "sqlite:////tmp/x.db",
            "DIGEST_SMTP_PASSWORD": "s3cret",
            "DIGEST_SECRET_KEY": "k" * 40,
        },
    )
    assert settings.smtp.host == "relay.example" and settings.smtp.port == 2525
    assert settings.database.url == "sqlite:////tmp/x.db"
    assert settings.smtp.password == "s3cret"
    assert settings.secret_key == "k" * 40
    assert "s3cret" not in repr(settings)


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DIGEST_SMTP_PORT"):
        load_settings(write(tmp_path, ""), env={"DIGEST_SMTP_PORT": "abc"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_secret_generated_once_beside_the_database(tmp_path: Path) -> None:
    path = write(tmp_path, f"[database]\nurl = 'sqlite:///{tmp_path}/db/subs.db'\n")
    first = ensure_secret(load_settings(path, env={}))
    second = ensure_secret(load_settings(path, env={}))
    assert len(first.secret_key) >= 40
    assert first.secret_key == second.secret_key
    key_file = tmp_path / "db" / ".secret_key"
    assert key_file.read_text().strip() == first.secret_key
    assert key_file.stat().st_mode & 0o077 == 0
    from_env = ensure_secret(load_settings(path, env={"DIGEST_SECRET_KEY": "e" * 40}))
    assert from_env.secret_key == "e" * 40
