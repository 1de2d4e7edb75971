"""The notifier inside one process: handlers record events, the deliverer sends them, and the
counters for metrics follow."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cargobay.app import build_metadata_store, create_app
from cargobay.config import Config, NotificationsConfig, WebhookConfig
from cargobay.notifications import stats


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll, for up to 20 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_counters_follow_deliveries_and_failures(tmp_path: Path) -> None:
    answers = [500]  # then 200
    received: list[dict[str, object]] = []

    async def hook(request: web.Request) -> web.Response:
        status = answers.pop(0) if answers else 200
        if status == 200:
            received.extend(json.loads(await request.read())["events"])
        return web.Response(status=status)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    async with TestServer(receiver, host="127.0.0.1") as hook_server:
        config = Config(
            data_dir=str(tmp_path),
            notifications=NotificationsConfig(
                [
                    WebhookConfig(
                        url=str(hook_server.make_url("/hook")),
                        name="hook",
                        timeout_seconds=1,
                        backoff_seconds=1,
                        max_backoff_seconds=1,
                    )
                ]
            ),
        )
        build_metadata_store(config).migrate()
        app = create_app(config)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            blob = b"webhook counters"
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            pushed = await client.post(
                "/v2/team/app/blobs/uploads/", params={"digest": digest}, data=blob
            )
            assert pushed.status == 201
            assert stats(app)["hook"]["queued"] == 1  # recorded before the response
            await wait_for(lambda: stats(app)["hook"]["delivered"] == 1)
            counters = stats(app)["hook"]
            assert counters["failed_attempts"] == 1
            assert counters["statuses"] == {500: 1, 200: 1}
            assert counters["pending"] == 0
            assert counters["delivering"] is True
            assert [e["target"]["digest"] for e in received] == [digest]  # type: ignore[index]
        assert stats(app)["hook"]["delivering"] is False  # released at shutdown


async def test_no_endpoints_no_counters(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path))
    assert stats(create_app(config)) == {}
