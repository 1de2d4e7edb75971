from __future__ import annotations

from pathlib import Path

import pytest

from cargobay.config import ConfigError, load_config


def test_defaults() -> None:
    config = load_config(environ={})
    assert config.host_port == ("127.0.0.1", 5000)
    assert config.registry.delete_enabled is True
    assert config.metadata_path == Path("data/metadata.db")


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("listen: 0.0.0.0:6000\nregistry:\n  delete_enabled: false\nworkers: 3\n")
    config = load_config(
        path,
        environ={"CARGOBAY_WORKERS": "5", "CARGOBAY_REGISTRY__AUTO_MOUNT": "false"},
        overrides={"data_dir": "/srv/x", "listen": None},
    )
    assert config.listen == "0.0.0.0:6000"
    assert config.workers == 5
    assert config.registry.delete_enabled is False
    assert config.registry.auto_mount is False
    assert config.data_dir == "/srv/x"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CARGOBAY_LISTEN_ADDR": "x"}, "unknown setting listen_addr"),
        ({"CARGOBAY_REGISTRY__NOPE": "1"}, "unknown setting registry.nope"),
        ({"CARGOBAY_WORKERS": "many"}, "workers must be int"),
        ({"CARGOBAY_LISTEN": "nohost"}, "HOST:PORT"),
        ({"CARGOBAY_STORAGE__DRIVER": "tape"}, "unknown storage driver"),
        ({"CARGOBAY_REGISTRY": "1"}, "must be a section"),
    ],
)
def test_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ=environ)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml", environ={})


def test_example_config_states_the_defaults() -> None:
    example = Path(__file__).parent.parent / "examples" / "config.yml"
    assert load_config(example, environ={}) == load_config(environ={})


def test_paths_in_a_config_file_are_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "c.yml"
    path.parent.mkdir()
    path.write_text(
        "tls: {certificate: a.crt, key: /abs/a.key}\n"
        "auth:\n  htpasswd: users\n  access:\n"
        "    - {users: [anonymous], repositories: ['public/*'], actions: [pull]}\n"
    )
    config = load_config(path, environ={})
    assert config.tls.certificate == str(tmp_path / "conf" / "a.crt")
    assert config.tls.key == "/abs/a.key"
    assert config.auth.htpasswd == str(tmp_path / "conf" / "users")
    assert config.auth.access[0].repositories == ["public/*"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls: {certificate: a.crt}", "both certificate and key"),
        ("auth: {htpasswd: h, token: {issuer: x}}", "signing_key, jwks or root_certificates"),
        ("auth: {htpasswd: h, token: {signing_key: k}}", "signing_key, jwks or root_certificates"),
        ("auth: {token: {issuer: x, signing_key: k}}", "needs auth.htpasswd"),
        ("auth: {htpasswd: h, token: {issuer: x, jwks: j}}", "needs realm"),
        ("auth: {access: [{users: [a], repositories: [b], actions: [write]}]}", "unknown action"),
        ("auth: {access: nope}", "must be a list"),
        ("auth: {access: [nope]}", "must be a section"),
    ],
)
def test_auth_and_tls_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_unknown_group_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "auth: {access: [{users: ['group:ghosts'], repositories: [a], actions: [pull]}]}"
    )
    with pytest.raises(ConfigError, match="unknown group"):
        load_config(path, environ={})
