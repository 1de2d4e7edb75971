"""The `cargobay` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ssl
import sys
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import DownloadColumn, MofNCompleteColumn, Progress, TaskID

from cargobay import __version__, metrics
from cargobay.app import build_metadata_store, build_registry
from cargobay.auth.htpasswd import HtpasswdError, hash_password, parse_htpasswd
from cargobay.auth.robots import new_token
from cargobay.auth.tokens import TokenInvalid
from cargobay.config import Config, ConfigError, load_config, masked
from cargobay.errors import Unavailable
from cargobay.lifecycle.gc import GarbageCollector
from cargobay.lifecycle.quota import quota_table
from cargobay.lifecycle.retention import Retention
from cargobay.lifecycle.retention import log_report as log_retention
from cargobay.logs import configure_logging
from cargobay.notifications import publish
from cargobay.notifications.notifier import build_notifier
from cargobay.registry.verify import verify_blobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cargobay", description="An OCI container registry.")
    parser.add_argument("--version", action="version", version=f"cargobay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the registry")
    _config_arguments(serve)
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    migrate = commands.add_parser("migrate", help="create or upgrade the metadata schema")
    _config_arguments(migrate)

    users = commands.add_parser("user", help="manage the users of auth.htpasswd")
    users.add_argument("action", choices=["add", "passwd", "remove", "list"])
    users.add_argument("name", nargs="?")
    _config_arguments(users)
    users.add_argument("--htpasswd", help="the htpasswd file (default: auth.htpasswd)")

    tokens = commands.add_parser("token", help="manage robot-account API tokens")
    tokens.add_argument("action", choices=["create", "list", "revoke"])
    tokens.add_argument("name", nargs="?", help="create: the robot's name; revoke: the token id")
    tokens.add_argument(
        "--scope",
        action="append",
        default=[],
        help="REPOSITORY-GLOB:ACTIONS the token grants, e.g. 'team/*:pull,push' (repeatable)",
    )
    _config_arguments(tokens)

    check = commands.add_parser(
        "verify", help="check that every blob the metadata knows is in the blob store"
    )
    _config_arguments(check)
    check.add_argument(
        "--digests", action="store_true", help="also read every blob and check its digest"
    )

    collect = commands.add_parser(
        "gc", help="collect garbage now: unreferenced blob links and blobs, with their bytes"
    )
    _config_arguments(collect)
    collect.add_argument(
        "--dry-run", action="store_true", help="list what would be collected, change nothing"
    )
    collect.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip walking the blob store for bytes the metadata does not know",
    )

    retain = commands.add_parser(
        "retention", help="apply the retention policies now: delete the tags and manifests they say"
    )
    _config_arguments(retain)
    retain.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted and why, change nothing"
    )

    quota_help = (
        "show the usage of every quota; read-only: a quota the metadata does not know yet"
        " (no registry instance configured with it has started) shows as not set up"
    )
    quotas = commands.add_parser("quota", help=quota_help, description=quota_help)
    _config_arguments(quotas)

    configs = commands.add_parser("config", help="check or show the configuration")
    configs.add_argument("action", choices=["check", "dump"])
    configs.add_argument("file", nargs="?", help="the YAML file (check: required)")
    configs.add_argument("--data-dir", help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if args.command == "config":
        args.config = args.file
        if args.action == "check" and args.file is None:
            parser.error("config check needs the FILE to check")
    try:
        config = load_config(
            args.config,
            overrides={
                "data_dir": args.data_dir,
                "listen": getattr(args, "listen", None),
                "workers": getattr(args, "workers", None),
                "log_level": getattr(args, "log_level", None),
            },
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"cargobay: {problem}", file=sys.stderr)
        sys.exit(2)
    if args.command == "config":
        if args.action == "check":
            print(f"{args.file}: OK")
        else:
            print(yaml.safe_dump(masked(config), sort_keys=False), end="")
        return
    configure_logging(config.log_level, config.log_format)
    try:
        run_command(args, config)
    except Unavailable as exc:
        sys.exit(f"cargobay: {exc.message}")


def run_command(args: argparse.Namespace, config: Config) -> None:
    if args.command == "token":
        asyncio.run(manage_tokens(config, args.action, args.name, args.scope))
    elif args.command == "user":
        manage_users(args.action, args.name, args.htpasswd or config.auth.htpasswd)
    elif args.command == "verify":
        if not asyncio.run(verify(config, args.digests)):
            sys.exit(1)
    elif args.command == "gc":
        if not asyncio.run(collect_garbage(config, args.dry_run, sweep=not args.no_sweep)):
            sys.exit(1)
    elif args.command == "retention":
        if not asyncio.run(apply_retention(config, args.dry_run or config.retention.dry_run)):
            sys.exit(1)
    elif args.command == "quota":
        asyncio.run(show_quotas(config))
    elif args.command == "migrate":
        build_metadata_store(config).migrate()
        print("metadata schema is up to date")
    else:
        from cargobay.server import serve as run_server

        try:
            run_server(config)
        except (HtpasswdError, TokenInvalid, ssl.SSLError, ValueError) as exc:
            sys.exit(f"cargobay: {exc}")
        except OSError as exc:
            sys.exit(f"cargobay: cannot start: {exc}")


async def verify(config: Config, digests: bool) -> bool:
    """`cargobay verify`: a progress bar while it walks the blobs, then a summary."""
    registry = build_registry(config)
    registry.metadata.migrate()
    try:
        total = await registry.metadata.statistics()
        counter = DownloadColumn() if digests else MofNCompleteColumn()
        with Progress(*Progress.get_default_columns(), counter, transient=True) as progress:
            task = progress.add_task(
                "checking blobs", total=total.blob_bytes if digests else total.blobs
            )
            report = await verify_blobs(
                registry.metadata,
                registry.blobs,
                digests=digests,
                progress=lambda size: progress.advance(task, size if digests else 1),
            )
    finally:
        await registry.blobs.close()
        await registry.metadata.close()
    console = Console()
    console.print(
        f"checked {report.blobs} blobs, {report.bytes:,} bytes"
        + (" (digests read and verified)" if digests else " (presence and size)")
    )
    for label, found in (
        ("missing from the blob store", report.missing),
        ("of the wrong size", report.wrong_size),
        ("with the wrong digest", report.wrong_digest),
    ):
        if found:
            console.print(f"[red]{len(found)} blobs {label}:[/red]")
            for digest in found:
                console.print(f"  {digest}")
    console.print("[green]all good[/green]" if report.ok else "[red]problems found[/red]")
    return report.ok


async def collect_garbage(config: Config, dry_run: bool, *, sweep: bool) -> bool:
    """`cargobay gc`: one whole collection now, with the configured grace delay."""
    registry = build_registry(config)
    registry.metadata.migrate()
    collector = GarbageCollector(registry.metadata, registry.blobs, config.gc)
    console = Console(soft_wrap=True)  # one line per item, whatever the terminal's width
    try:
        with Progress(*Progress.get_default_columns(), transient=True) as progress:
            if sweep and not dry_run:
                task = progress.add_task("sweeping the blob store", total=None)
                queued = await collector.sweep(rate=1_000_000)
                progress.remove_task(task)
                if queued:
                    console.print(f"sweep: {queued} blobs unknown to the metadata queued")
            tasks: dict[str, TaskID] = {}

            def advance(phase: str, done: int) -> None:
                if phase not in tasks:
                    tasks[phase] = progress.add_task(f"collecting {phase}", total=None)
                progress.update(tasks[phase], completed=done)

            report = await collector.collect(dry_run=dry_run, progress=advance)
    finally:
        await registry.blobs.close()
        await registry.metadata.close()
    if report is None:
        console.print("another process is collecting now; try again later")
        return False
    verb = "would be removed" if dry_run else "removed"
    if dry_run:
        for link in report.links:
            console.print(f"link {link.repository}@{link.digest}: referenced by no manifest")
        for blob in report.blobs:
            console.print(f"blob {blob.digest}: linked into no repository")
    console.print(
        f"{len(report.links)} blob links and {len(report.blobs)} blobs {verb},"
        f" {report.bytes:,} bytes {'would be ' if dry_run else ''}reclaimed"
        f" in {report.seconds:.1f} s (grace delay {config.gc.delay_seconds} s)"
    )
    if report.failures:
        console.print(f"[red]{report.failures} blob deletions failed; run it again[/red]")
    return not report.failures


async def apply_retention(config: Config, dry_run: bool) -> bool:
    """`cargobay retention`: apply every policy once now; print each deletion and its reason."""
    registry = build_registry(config)
    registry.metadata.migrate()
    notifier = build_notifier(config)  # records webhook events; the registry delivers them
    port = config.host_port[1]

    async def notify(repository: str, reference: str) -> None:
        await publish.deleted_by_retention(notifier, port, repository, reference)

    retention = Retention(registry.metadata, config.retention, registry.immutable, notify)
    console = Console(soft_wrap=True)  # one line per item, whatever the terminal's width
    try:
        with Progress(*Progress.get_default_columns(), transient=True) as progress:
            task = progress.add_task("applying retention policies", total=None)
            report = await retention.run(
                dry_run=dry_run, progress=lambda done: progress.update(task, completed=done)
            )
    finally:
        if notifier is not None:
            await notifier.queue.close()
        await registry.blobs.close()
        await registry.metadata.close()
    if report is None:
        console.print("another process is applying the retention policies now; try again later")
        return False
    if not config.retention.policies:
        console.print("no retention policies configured (retention.policies)")
    for deletion in report.deleted:
        console.print(deletion.describe(), markup=False, highlight=False, emoji=False)
    for deletion in report.kept_by_pushes:
        kept = f"kept {deletion.describe()}: changed by a push meanwhile"
        console.print(kept, markup=False, highlight=False, emoji=False)
    verb = "would be deleted" if dry_run else "deleted"
    console.print(
        f"{report.count('tag')} tags and {report.count('manifest')} manifests {verb}"
        f" in {report.repositories} repositories in {report.seconds:.1f} s"
        + (" (dry run: nothing changed)" if dry_run else "")
    )
    if not dry_run:
        log_retention(report)
        metrics.retention_run(report)
    return True


async def show_quotas(config: Config) -> None:
    """`cargobay quota`: every quota's usage, in a table. Sets up and drops no quota: one set up
    here that the instances lack would not be charged by their pushes, and go stale."""
    registry = build_registry(config)
    registry.metadata.migrate()
    try:
        reports = await registry.quotas.report()
    finally:
        await registry.blobs.close()
        await registry.metadata.close()
    console = Console()
    if not reports:
        console.print("no quotas configured")
        return
    console.print(quota_table(reports))


async def manage_tokens(config: Config, action: str, name: str | None, scopes: list[str]) -> None:
    metadata = build_metadata_store(config)
    metadata.migrate()
    try:
        if action == "list":
            for record in await metadata.list_api_tokens():
                state = "revoked" if record.revoked_at else "active"
                granted = " ".join(f"{p}:{','.join(a)}" for p, a in record.scopes)
                print(f"{record.id}  {record.kind}  {record.name}  {state}  {granted}".rstrip())
        elif action == "revoke":
            if not name or not await metadata.revoke_api_token(name):
                sys.exit(f"cargobay: no active token {name!r}")
            print(f"revoked {name}")
        else:
            if not name or not scopes:
                sys.exit("cargobay: token create NAME --scope 'REPOSITORY-GLOB:ACTIONS' ...")
            parsed = []
            for text in scopes:
                pattern, sep, actions = text.rpartition(":")
                wanted = tuple(a for a in actions.split(",") if a)
                if not sep or not pattern or not set(wanted) <= {"pull", "push", "delete", "*"}:
                    sys.exit(f"cargobay: bad scope {text!r}: expected e.g. 'team/*:pull,push'")
                parsed.append((pattern, wanted))
            token, record = new_token(name, tuple(parsed))
            await metadata.create_api_token(record)
            print(token)  # shown once: only its hash is stored
    finally:
        await metadata.close()


def manage_users(action: str, name: str | None, path: str | None) -> None:
    if path is None:
        sys.exit("cargobay: no htpasswd file: set auth.htpasswd in --config or pass --htpasswd")
    file = Path(path)
    users = parse_htpasswd(file.read_text(), path) if file.exists() else {}
    if action == "list":
        print("\n".join(sorted(users)))
        return
    if not name or ":" in name:
        sys.exit("cargobay: give a user name (without ':')")
    if action == "remove":
        if users.pop(name, None) is None:
            sys.exit(f"cargobay: no user {name!r}")
    else:
        if action == "add" and name in users:
            sys.exit(f"cargobay: user {name!r} exists; use `cargobay user passwd`")
        if action == "passwd" and name not in users:
            sys.exit(f"cargobay: no user {name!r}")
        users[name] = hash_password(_read_password()).encode()
    text = "".join(f"{user}:{hashed.decode()}\n" for user, hashed in users.items())
    temporary = file.with_name(file.name + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o600)
    temporary.replace(file)  # atomic: a running registry never reads a half-written file


def _read_password() -> str:
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            sys.exit("cargobay: the passwords differ")
    if not password:
        sys.exit("cargobay: empty password")
    return password


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--data-dir", help="where blobs and metadata live (default ./data)")
