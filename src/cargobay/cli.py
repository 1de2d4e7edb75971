"""The `cargobay` command."""

from __future__ import annotations

import argparse
import logging
import sys

from cargobay import __version__
from cargobay.app import build_metadata_store
from cargobay.config import ConfigError, load_config


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

    args = parser.parse_args(argv)
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
        sys.exit(f"cargobay: {exc}")
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    if args.command == "migrate":
        build_metadata_store(config).migrate()
        print("metadata schema is up to date")
    else:
        from cargobay.server import serve as run_server

        try:
            run_server(config)
        except OSError as exc:
            sys.exit(f"cargobay: cannot listen on {config.listen}: {exc}")


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument("--data-dir", help="where blobs and metadata live (default ./data)")
