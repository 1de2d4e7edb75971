from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt


def cargobay(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cargobay", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_add_passwd_remove(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    config = tmp_path / "c.yml"
    config.write_text("auth: {htpasswd: htpasswd}\n")  # relative to the config file
    assert cargobay("user", "add", "alice", "--config", str(config), stdin="pw1\n").returncode == 0
    hashed = htpasswd.read_text().strip().split(":", 1)[1].encode()
    assert bcrypt.checkpw(b"pw1", hashed)
    assert cargobay("user", "add", "alice", "--config", str(config), stdin="x\n").returncode != 0
    assert (
        cargobay("user", "passwd", "alice", "--config", str(config), stdin="pw2\n").returncode == 0
    )
    hashed = htpasswd.read_text().strip().split(":", 1)[1].encode()
    assert bcrypt.checkpw(b"pw2", hashed)
    cargobay("user", "add", "bob", "--htpasswd", str(htpasswd), stdin="pw\n")
    listed = cargobay("user", "list", "--htpasswd", str(htpasswd))
    assert listed.stdout.split() == ["alice", "bob"]
    assert cargobay("user", "remove", "alice", "--htpasswd", str(htpasswd)).returncode == 0
    assert cargobay("user", "list", "--htpasswd", str(htpasswd)).stdout.split() == ["bob"]
    assert htpasswd.stat().st_mode & 0o077 == 0


def test_serve_refuses_a_non_bcrypt_htpasswd(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    config = tmp_path / "c.yml"
    config.write_text("auth: {htpasswd: htpasswd}\n")
    result = cargobay(
        "serve", "--config", str(config), "--listen", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    assert result.returncode != 0
    assert "bcrypt" in result.stderr
