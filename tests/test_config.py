from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cargobay.config import Config, ConfigError, load_config, parse_duration, parse_size


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
        ({"CARGOBAY_STORAGE__DRIVER": "s3"}, "storage.s3.bucket is required"),
        ({"CARGOBAY_STORAGE__S3__PART_SIZE_MIB": "4"}, "at least 5"),
        ({"CARGOBAY_METADATA__DRIVER": "postgres"}, "metadata.url is required"),
        ({"CARGOBAY_METADATA__DRIVER": "mysql"}, "unknown metadata driver"),
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
    example = Path(__file__).parent.parent / "examples" / "full.yml"
    assert load_config(example, environ={}) == load_config(environ={})


def test_example_config_lists_every_setting() -> None:
    example = yaml.safe_load((Path(__file__).parent.parent / "examples" / "full.yml").read_text())

    def settings(cls: type, data: dict[str, object], where: str) -> Iterator[str]:
        for f in dataclasses.fields(cls):
            assert f.name in data, f"examples/full.yml lacks {where}{f.name}"
            kind = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(kind):
                yield from settings(kind, data[f.name], f"{where}{f.name}.")  # type: ignore[arg-type]
            yield f"{where}{f.name}"

    assert "storage.s3.bucket" in set(settings(Config, example, ""))


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
        (
            "auth: {htpasswd: h, token: {issuer: x}}",
            "jwks or root_certificates",
        ),
        (
            "auth: {htpasswd: h, token: {signing_key: k}}",
            "jwks or root_certificates",
        ),
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


def test_file_values_interpolate_environment_variables(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "workers: ${WORKERS:-3}\n"
        "secret: ${CARGOBAY_SECRET}\n"
        "metadata: {driver: postgres, url: '${DATABASE_URL}', pool_size: '${POOL:-4}'}\n"
        "storage:\n"
        "  driver: s3\n"
        "  s3:\n"
        "    bucket: ${S3_BUCKET}\n"
        "    endpoint: ${S3_ENDPOINT_URL:-}\n"
        "    region: ${AWS_REGION:-us-east-1}\n"
        "    prefix: 'cost $$5/${S3_PREFIX:-x}'\n"
        "    redirect: ${REDIRECT:-false}\n"
    )
    environ = {
        "DATABASE_URL": "postgresql://u:p@db/cargobay",
        "S3_BUCKET": "blobs",
        "CARGOBAY_SECRET": "s3cr3t: not yaml",
        "AWS_REGION": "",
    }
    config = load_config(path, environ=environ)
    assert config.workers == 3
    assert config.secret == "s3cr3t: not yaml"
    assert config.metadata.url == "postgresql://u:p@db/cargobay"
    assert config.metadata.pool_size == 4
    assert config.storage.s3.bucket == "blobs"
    assert config.storage.s3.endpoint is None  # empty means unset
    assert config.storage.s3.region == "us-east-1"  # empty takes the default
    assert config.storage.s3.prefix == "cost $5/x"
    assert config.storage.s3.redirect is False


def test_unset_variable_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("storage:\n  s3:\n    bucket: ${S3_BUCKET}\n")
    with pytest.raises(ConfigError, match=r"storage\.s3\.bucket: environment variable S3_BUCKET"):
        load_config(path, environ={})


def test_interpolated_value_must_still_fit_its_type(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("workers: ${WORKERS}\n")
    with pytest.raises(ConfigError, match="workers must be int"):
        load_config(path, environ={"WORKERS": "many"})


def test_token_signing_key_may_come_from_the_shared_secret(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("auth: {htpasswd: h, token: {issuer: me, service: reg}}\n")
    with pytest.raises(ConfigError, match="signing_key"):
        load_config(path, environ={})
    config = load_config(path, environ={"CARGOBAY_SECRET": "shared"})
    assert config.secret == "shared"


def test_immutable_tags(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text('immutable_tags:\n  - {repositories: ["release/*"], tags: ["^v[0-9]"]}\n')
    (rule,) = load_config(path, environ={}).immutable_tags
    assert (rule.repositories, rule.tags) == (["release/*"], ["^v[0-9]"])


def test_invalid_immutable_tag_pattern_names_its_key_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "immutable_tags:\n"
        '  - {repositories: ["*"], tags: ["^stable$"]}\n'
        '  - {repositories: ["release/*"], tags: ["^v[0-9]", "(unclosed", "ok"]}\n'
        "  - {repositories: [], tags: []}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    problems = error.value.problems
    assert len(problems) == 3, problems
    assert problems[0].startswith(
        "immutable_tags[1].tags[1]: invalid regular expression '(unclosed': "
    ), problems
    assert "immutable_tags[2].repositories must name at least one glob" in problems
    assert "immutable_tags[2].tags must name at least one regular expression" in problems


def test_lifecycle_example_loads() -> None:
    example = Path(__file__).parent.parent / "examples" / "lifecycle.yml"
    config = load_config(example, environ={})
    assert config.gc.enabled and config.gc.delay_seconds == 86400
    assert [rule.repositories for rule in config.immutable_tags] == [["release/*"], ["*"]]


def test_quotas(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "quotas:\n"
        '  - {repositories: ["team-a/*"], max_bytes: 10GiB, max_tags: 10000}\n'
        '  - {repositories: ["team-b/*"], max_bytes: 1.5 GB}\n'
        '  - {repositories: ["ci/*", "tmp/*"], max_bytes: 1000}\n'
        '  - {repositories: ["any/*"]}\n'
    )
    config = load_config(path, environ={})
    assert [(q.repositories, q.max_bytes, q.max_tags) for q in config.quotas] == [
        (["team-a/*"], "10GiB", 10000),
        (["team-b/*"], "1.5 GB", None),
        (["ci/*", "tmp/*"], 1000, None),
        (["any/*"], None, None),
    ]
    assert [parse_size(q.max_bytes) for q in config.quotas[:3] if q.max_bytes is not None] == [
        10 * 1024**3,
        1_500_000_000,
        1000,
    ]


@pytest.mark.parametrize(
    ("value", "size"),
    [("512", 512), ("1KB", 1000), ("1KiB", 1024), ("2 MiB", 2 << 20), ("3gb", 3 * 10**9),
     ("1TiB", 1 << 40), ("0.5KiB", 512), ("7B", 7)],
)  # fmt: skip
def test_sizes_take_decimal_and_binary_units(value: str, size: int) -> None:
    assert parse_size(value) == size


def test_bad_quotas_name_their_key_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "quotas:\n"
        '  - {repositories: ["a/*"], max_bytes: 10GiB}\n'
        '  - {repositories: ["b/*"], max_bytes: 10 GiBs}\n'
        '  - {repositories: ["c/*"], max_bytes: -5, max_tags: -1}\n'
        "  - {repositories: [], max_bytes: lots}\n"
        '  - {repositories: ["e/*"], max_tags: many}\n'
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    problems = error.value.problems
    assert "quotas[4].max_tags must be int or NoneType, not 'many'" in problems, problems
    assert (
        "quotas[1].max_bytes: '10 GiBs' is not a size: a number of bytes, or one with a unit"
        " (KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 10GiB"
    ) in problems, problems
    assert "quotas[2].max_bytes: must not be negative, not -5" in problems, problems
    assert "quotas[2].max_tags must not be negative" in problems, problems
    assert "quotas[3].repositories must name at least one glob" in problems, problems
    assert any(p.startswith("quotas[3].max_bytes: 'lots' is not a size") for p in problems)
    assert len(problems) == 6, problems


def test_quotas_from_the_environment() -> None:
    environ = {"CARGOBAY_QUOTAS": '[{repositories: ["team-a/*"], max_bytes: 10GiB}]'}
    (quota,) = load_config(environ=environ).quotas
    assert (quota.repositories, quota.max_bytes, quota.max_tags) == (["team-a/*"], "10GiB", None)


def test_retention_policies_are_read_with_their_durations(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "retention:\n"
        "  dry_run: true\n"
        "  policies:\n"
        '    - repositories: ["ci/*"]\n'
        '      keep_tags: {patterns: ["^v[0-9]", "^latest$"], most_recent: 10,'
        " pushed_within: 30d, pulled_within: 90d}\n"
        "      delete_untagged_after: 7d\n"
        "      delete_referrers: true\n"
        '    - {repositories: ["*"], delete_untagged_after: 1.5h}\n'
    )
    retention = load_config(path, environ={}).retention
    assert (retention.dry_run, retention.interval_seconds) == (True, 3600)
    ci, rest = retention.policies
    assert ci.keep_tags is not None and ci.keep_tags.most_recent == 10
    assert (ci.keep_tags.pushed_within, ci.delete_untagged_after) == ("30d", "7d")
    assert ci.delete_referrers and rest.keep_tags is None and not rest.delete_referrers
    assert [parse_duration(t) for t in ("30d", "1.5h", "2w", "90s", "5m")] == [
        30 * 86400, 5400, 14 * 86400, 90, 300
    ]  # fmt: skip


def test_bad_retention_policies_name_their_key_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "retention:\n"
        "  interval_seconds: 0\n"
        "  policies:\n"
        '    - repositories: ["ci/*"]\n'
        '      keep_tags: {patterns: ["^v[0-9", "ok"], most_recent: 0, pushed_within: 30}\n'
        "      delete_untagged_after: 7 days\n"
        "    - repositories: []\n"
        "      keep_tags: {pulled_within: 3x}\n"
        '    - {repositories: ["a"], keep_tags: {}}\n'
        '    - {repositories: ["b"], keep_tags: nope}\n'
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    problems = error.value.problems
    where = "retention.policies"
    expected = [
        "retention.interval_seconds must be at least 1",
        f"{where}[0].keep_tags.most_recent must be at least 1",
        f"{where}[0].delete_untagged_after: '7 days' is not a duration: a number and s, m, h,"
        " d or w, e.g. 30d",
        f"{where}[0].keep_tags.pushed_within: '30' is not a duration: a number and s, m, h,"
        " d or w, e.g. 30d",
        f"{where}[1].repositories must name at least one glob",
        f"{where}[1].keep_tags.pulled_within: '3x' is not a duration: a number and s, m, h,"
        " d or w, e.g. 30d",
        f"{where}[3].keep_tags must be a section",
    ]
    for problem in expected:
        assert problem in problems, problems
    assert any(
        p.startswith(f"{where}[0].keep_tags.patterns[0]: invalid regular expression '^v[0-9'")
        for p in problems
    ), problems
    assert any(p.startswith(f"{where}[2].keep_tags keeps nothing") for p in problems), problems
    assert len(problems) == len(expected) + 2, problems
