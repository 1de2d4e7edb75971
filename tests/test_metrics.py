"""Prometheus metrics on their own listener, summed over every worker process."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.helpers import push_image
from tests.server import RegistryProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_bytes_and_store_calls(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    port = free_port()
    server = start_registry(workers=2, config={"metrics": {"listen": f"127.0.0.1:{port}"}})
    url = f"http://127.0.0.1:{port}/metrics"
    route = "/v2/{name}/manifests/{reference}"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/v2/").status_code == 200
        before = scrape(url)
        manifest, _ = push_image(client, "metrics/app", "v1", layers=2)
        for _ in range(5):  # over both workers
            assert (
                client.get("/v2/metrics/app/manifests/v1", headers={"Accept": "*/*"}).status_code
                == 200
            )
        assert client.get("/v2/metrics/app/manifests/nope").status_code == 404
    after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("cargobay_http_requests_total", route=route, method="GET", status="200") == 5
    assert moved("cargobay_http_requests_total", route=route, method="GET", status="404") == 1
    assert moved("cargobay_http_requests_total", route=route, method="PUT", status="201") == 1
    assert moved("cargobay_http_request_duration_seconds_count", route=route, method="GET") == 6
    assert moved("cargobay_http_response_bytes_total", route=route) >= 5 * len(manifest)
    assert moved("cargobay_http_request_bytes_total", route=route) == len(manifest)
    uploads = "/v2/{name}/blobs/uploads/"
    assert moved("cargobay_http_requests_total", route=uploads, method="POST", status="202") == 3
    calls = "cargobay_store_call_duration_seconds_count"
    assert (
        moved(calls, store="metadata", driver="SQLiteMetadataStore", operation="put_manifest") == 1
    )
    assert moved(calls, store="blobs", driver="FilesystemBlobStore", operation="commit_upload") == 3
    assert value(after, "cargobay_upload_requests_in_progress") == 0
    assert "cargobay_store_errors_total" not in {name for name, _ in after if moved(name) > 0}
    # Registry totals are refreshed at start (then every 30 s): present, and counting.
    assert ("cargobay_blobs", ()) in after and ("cargobay_blob_bytes", ()) in after


def test_webhook_delivery_metrics(start_registry: Callable[..., RegistryProcess]) -> None:
    port = free_port()
    nowhere = f"http://127.0.0.1:{free_port()}/events"  # nothing listens: every attempt fails
    server = start_registry(
        workers=1,
        config={
            "metrics": {"listen": f"127.0.0.1:{port}"},
            "notifications": {"endpoints": [{"name": "down", "url": nowhere}]},
        },
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        push_image(client, "hooks/app", "v1")
    for _ in range(100):  # poll: the first attempt happens right away
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        if value(samples, "cargobay_webhook_delivery_failures_total", endpoint="down") >= 1:
            break
        threading.Event().wait(0.1)
    assert value(samples, "cargobay_webhook_delivery_failures_total", endpoint="down") >= 1
    assert value(samples, "cargobay_webhook_events_delivered_total", endpoint="down") == 0


def test_ops_example_serves_metrics_json_logs_and_webhooks(
    start_registry: Callable[..., RegistryProcess],
) -> None:
    """examples/ops.yml as documented: its variables set, nothing else."""
    port = free_port()
    example = Path(__file__).parent.parent / "examples" / "ops.yml"
    server = start_registry(
        workers=1,
        config_file=example,
        env={
            "METRICS_LISTEN": f"127.0.0.1:{port}",
            "WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/",
        },
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/v2/").status_code == 200
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert (
        value(samples, "cargobay_http_requests_total", route="/v2/", method="GET", status="200")
        == 1
    )
    server.stop()
    assert any(
        line.startswith('{"time"') and '"cargobay.access"' in line
        for line in server.log().splitlines()
    )
