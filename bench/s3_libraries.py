"""obstore vs aiobotocore as the S3 client of the blob store (docs/design.md, "S3 client
library: obstore").

python -m bench.s3_libraries              # 3 rounds, about 3 minutes
python -m bench.s3_libraries --rounds 5

Starts its own SeaweedFS on loopback (tests/services/seaweedfs.py), then per round runs each
library once, in alternating order, each in a fresh process (so that its peak RSS is its own and
no client state carries over). Both use what the driver uses: 8 MiB parts with 2 in flight for
streamed uploads, 1 MiB pieces for streamed downloads, SigV4 with signed payloads. CPU time is
process time (all threads: obstore's work runs on its Rust runtime) per operation. Medians over
rounds are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

MiB = 1 << 20
BIG = 64 * MiB
PART = 8 * MiB
PART_CONCURRENCY = 2
PIECE = MiB
SMALL = 4096
LIBRARIES = ("obstore", "aiobotocore")
# (result key, label, unit): the rows of the table
ROWS = (
    ("put_mib_s", "PUT 64 MiB, streamed multipart", "MiB/s"),
    ("put_cpu_ms", "CPU per PUT", "ms"),
    ("get_mib_s", "GET 64 MiB, streamed", "MiB/s"),
    ("get_cpu_ms", "CPU per GET", "ms"),
    ("head_c1_ms", "HEAD, sequential", "ms/op"),
    ("head_c1_cpu_us", "CPU per HEAD", "µs"),
    ("head_c16_ms", "HEAD, 16 concurrent (latency)", "ms/op"),
    ("head_c16_ops", "HEAD, 16 concurrent (throughput)", "ops/s"),
    ("head_c16_cpu_us", "CPU per HEAD", "µs"),
    ("small_get_ms", "GET 4 KiB, sequential", "ms/op"),
    ("small_get_cpu_us", "CPU per GET", "µs"),
    ("presign_us", "presign GET URL", "µs/op"),
    ("presign_async_us", "obstore sign_async instead of sign", "µs/op"),
    ("import_ms", "import + client setup", "ms"),
    ("peak_rss_mib", "peak RSS of the process", "MiB"),
)


# -- one library, in its own process ---------------------------------------------------------


async def generated(size: int) -> AsyncIterator[bytes]:
    block = os.urandom(PIECE)
    for _ in range(size // PIECE):
        yield block


class Client:
    """The operations measured, one subclass per library."""

    async def put_stream(self, key: str, size: int) -> None: ...
    async def put_small(self, key: str, data: bytes) -> None: ...
    async def get_stream(self, key: str) -> int: ...
    async def head(self, key: str) -> int: ...
    async def presign(self, key: str) -> str: ...
    async def delete(self, keys: list[str]) -> None: ...
    async def close(self) -> None: ...


class Obstore(Client):
    def __init__(self, endpoint: str, key: str, secret: str, bucket: str) -> None:
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        self.store = S3Store(
            bucket,
            endpoint=endpoint,
            region="us-east-1",
            access_key_id=key,
            secret_access_key=secret,
            client_options={"allow_http": True},
        )

    async def put_stream(self, key: str, size: int) -> None:
        await self.obs.put_async(
            self.store,
            key,
            generated(size),
            chunk_size=PART,
            max_concurrency=PART_CONCURRENCY,
        )

    async def put_small(self, key: str, data: bytes) -> None:
        await self.obs.put_async(self.store, key, data)

    async def get_stream(self, key: str) -> int:
        result = await self.obs.get_async(self.store, key)
        return sum([len(piece) async for piece in result.stream(min_chunk_size=PIECE)])

    async def head(self, key: str) -> int:
        return (await self.obs.head_async(self.store, key))["size"]

    async def presign(self, key: str) -> str:
        # What the driver does with configured keys; sign_async is measured separately.
        return self.obs.sign(self.store, "GET", key, timedelta(minutes=20))

    async def presign_async(self, key: str) -> str:
        return await self.obs.sign_async(self.store, "GET", key, timedelta(minutes=20))

    async def delete(self, keys: list[str]) -> None:
        await self.obs.delete_async(self.store, keys)


class Aiobotocore(Client):
    def __init__(self, endpoint: str, key: str, secret: str, bucket: str) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        self.bucket = bucket
        self.context = get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=AioConfig(s3={"addressing_style": "path"}, max_pool_connections=32),
        )
        self.client: Any = None

    async def open(self) -> None:
        self.client = await self.context.__aenter__()

    async def put_stream(self, key: str, size: int) -> None:
        """What the driver would do with aiobotocore: buffer a part, upload it, at most
        PART_CONCURRENCY in flight, then complete."""
        upload = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        slots = asyncio.Semaphore(PART_CONCURRENCY)
        tasks = []

        async def send(number: int, body: bytes) -> None:
            try:
                answer = await self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            finally:
                slots.release()

        buffer = bytearray()
        number = 0
        async for piece in generated(size):
            buffer += piece
            if len(buffer) >= PART:
                number += 1
                await slots.acquire()
                tasks.append(asyncio.create_task(send(number, bytes(buffer))))
                buffer.clear()
        if buffer:
            number += 1
            await slots.acquire()
            tasks.append(asyncio.create_task(send(number, bytes(buffer))))
        await asyncio.gather(*tasks)
        parts.sort(key=lambda p: p["PartNumber"])
        await self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    async def put_small(self, key: str, data: bytes) -> None:
        await self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    async def get_stream(self, key: str) -> int:
        answer = await self.client.get_object(Bucket=self.bucket, Key=key)
        async with answer["Body"] as body:
            return sum([len(piece) async for piece in body.iter_chunks(PIECE)])

    async def head(self, key: str) -> int:
        return int((await self.client.head_object(Bucket=self.bucket, Key=key))["ContentLength"])

    async def presign(self, key: str) -> str:
        url: str = await self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=1200
        )
        return url

    async def delete(self, keys: list[str]) -> None:
        objects = [{"Key": k} for k in keys]
        await self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})

    async def close(self) -> None:
        await self.context.__aexit__(None, None, None)


async def timed(operation: Callable[[], Awaitable[object]], count: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for `count` sequential runs."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await operation()
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(library: str, args: argparse.Namespace) -> dict[str, float]:
    started = time.perf_counter()
    if library == "obstore":
        client: Client = Obstore(args.endpoint, args.key, args.secret, args.bucket)
    else:
        client = Aiobotocore(args.endpoint, args.key, args.secret, args.bucket)
        await client.open()
    prefix = f"bench/{library}/{os.getpid()}"
    await client.put_small(f"{prefix}/small", os.urandom(SMALL))  # also opens a connection
    result = {"import_ms": (time.perf_counter() - started) * 1000}
    big = f"{prefix}/big"
    await client.put_stream(big, BIG)  # warm-up
    reps = args.big_reps
    wall, cpu = await timed(lambda: client.put_stream(big, BIG), reps)
    result |= {"put_mib_s": reps * BIG / MiB / wall, "put_cpu_ms": cpu / reps * 1000}
    wall, cpu = await timed(lambda: client.get_stream(big), reps)
    result |= {"get_mib_s": reps * BIG / MiB / wall, "get_cpu_ms": cpu / reps * 1000}

    small = f"{prefix}/small"
    n = args.small_ops
    wall, cpu = await timed(lambda: client.head(small), n)
    result |= {"head_c1_ms": wall / n * 1000, "head_c1_cpu_us": cpu / n * 1e6}
    latencies: list[float] = []

    async def head_worker() -> None:
        for _ in range(n // 16):
            t = time.perf_counter()
            await client.head(small)
            latencies.append(time.perf_counter() - t)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(head_worker() for _ in range(16)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result |= {
        "head_c16_ms": statistics.mean(latencies) * 1000,
        "head_c16_ops": len(latencies) / wall,
        "head_c16_cpu_us": cpu / len(latencies) * 1e6,
    }
    wall, cpu = await timed(lambda: client.get_stream(small), n)
    result |= {"small_get_ms": wall / n * 1000, "small_get_cpu_us": cpu / n * 1e6}
    wall, _ = await timed(lambda: client.presign(big), args.presigns)
    result["presign_us"] = wall / args.presigns * 1e6
    if isinstance(client, Obstore):
        wall, _ = await timed(lambda: client.presign_async(big), args.presigns)
        result["presign_async_us"] = wall / args.presigns * 1e6

    await client.delete([big, small])
    await client.close()
    result["peak_rss_mib"] = peak_rss() / MiB
    return result


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# -- the driver: server, rounds, table -------------------------------------------------------


def run_library(library: str, args: argparse.Namespace, server: Any) -> dict[str, float]:
    command = [
        sys.executable, "-m", "bench.s3_libraries", "--worker", library,
        "--endpoint", server.endpoint_url, "--bucket", server.bucket,
        "--key", server.access_key, "--secret", server.secret_key,
        "--big-reps", str(args.big_reps), "--small-ops", str(args.small_ops),
        "--presigns", str(args.presigns),
    ]  # fmt: skip
    # A fresh interpreter rather than a fork: obstore's runtime does not survive fork().
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{library} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("obstore", "aiobotocore", "botocore", "aiohttp")}


def table(results: dict[str, list[dict[str, float]]]) -> str:
    medians = {
        lib: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for lib, runs in results.items()
    }
    lines = [
        "| case | unit | obstore | aiobotocore | obstore / aiobotocore |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for key, label, unit in ROWS:
        a, b = medians["obstore"].get(key), medians["aiobotocore"].get(key)
        ratio = f"{a / b:.2f}" if a and b else "-"
        lines.append(f"| {label} | {unit} | {_number(a)} | {_number(b)} | {ratio} |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.s3_libraries")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--big-reps", type=int, default=3, help="64 MiB PUTs and GETs per round")
    p.add_argument("--small-ops", type=int, default=800, help="HEADs / small GETs per round")
    p.add_argument("--presigns", type=int, default=5000)
    p.add_argument("--json", type=Path, help="also write every run's numbers here")
    p.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    for option in ("--endpoint", "--bucket", "--key", "--secret"):
        p.add_argument(option, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(measure(args.worker, args))))
        return

    from tests.services.seaweedfs import SeaweedFS

    results: dict[str, list[dict[str, float]]] = {lib: [] for lib in LIBRARIES}
    with tempfile.TemporaryDirectory(prefix="s3-libraries-") as workdir:
        server = SeaweedFS(Path(workdir)).start()
        try:
            for round_ in range(args.rounds):
                order = LIBRARIES if round_ % 2 == 0 else LIBRARIES[::-1]
                for library in order:
                    results[library].append(run_library(library, args, server))
                    print(f"round {round_ + 1}/{args.rounds}: {library} done", file=sys.stderr)
        finally:
            server.stop()
    print(f"{versions()}, {os.cpu_count()} CPUs, SeaweedFS on loopback, {args.rounds} rounds")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"versions": versions(), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
