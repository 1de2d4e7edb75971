"""Turn raw results into the markdown report (and keep the raw numbers as JSON)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

SERVERS = ("cargobay", "distribution")
SERVICES = ("seaweedfs", "postgresql")  # backing services of --backend s3
MiB = 1 << 20


def fmt(value: float, digits: int = 3) -> str:
    """Three significant digits, thousands separators; '—' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def median(values: list[float]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per case: medians over rounds for each server, and the ratio."""
    rows = []
    for case in results["cases"]:
        row: dict[str, Any] = {
            "id": case["id"],
            "title": case["title"],
            "unit": case["unit"],
            "failed": {},
        }
        for server in SERVERS:
            runs = case["runs"].get(server, [])
            ok = [r for r in runs if r["ops"] > 0]
            errors = [r for r in runs if r["errors"] or r["ops"] == 0]
            if errors:
                first = next((r["error"] for r in errors if r["error"]), "no operations")
                row["failed"][server] = f"{sum(r['errors'] for r in runs)} errors: {first}"
            row[server] = {
                "value": median([r["headline"] for r in ok]),
                "ops_per_s": median([r["ops_per_s"] for r in ok]),
                "p50_ms": median([r["p50_ms"] for r in ok]),
                "p99_ms": median([r["p99_ms"] for r in ok]),
                "cpu_ms_per_op": median([r["server_cpu_ms_per_op"] for r in ok]),
                "server_cores": median([r["server_cores"] for r in ok]),
                "client_cores": median([r["client_cores"] for r in ok]),
                "peak_rss_mib": max((r["peak_rss_bytes"] / MiB for r in ok), default=math.nan),
                "rounds": len(ok),
                "items_per_op": median([r["items"] / r["ops"] for r in ok]),
                "busiest_share": median([_busiest_share(r) for r in ok]),
                "redirects_per_op": median([r.get("redirects_per_op", math.nan) for r in ok]),
                **{
                    f"{service}_cpu_ms_per_op": median(
                        [r.get(f"{service}_cpu_ms_per_op", math.nan) for r in ok]
                    )
                    for service in SERVICES
                },
            }
        a, b = row["cargobay"]["value"], row["distribution"]["value"]
        row["ratio"] = a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan
        rows.append(row)
    return rows


def _busiest_share(run: dict[str, Any]) -> float:
    """The busiest process's share of the server's CPU in a run (1.0 = one process did it all)."""
    cpu = run.get("server_cpu_by_process_s") or []
    return max(cpu) / sum(cpu) if cpu and sum(cpu) > 0 else math.nan


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lim = results["limits"]
    s = results["settings"]
    v = results["versions"]
    rows = summarize(results)
    s3 = s.get("backend", "embedded") == "s3"
    if s3:
        services = v.get("services", {})
        title = "# Performance: cargobay vs distribution on S3 (SeaweedFS) + PostgreSQL"
        setup = (
            f"- cargobay {v['cargobay']} ({s['cargobay_workers']} workers, blobs in S3, metadata"
            " in PostgreSQL); distribution (docker-registry) " + v["distribution"] + " (S3 driver)"
        )
        about = [
            "",
            "The embedded setup's numbers (files + SQLite; distribution on the filesystem) are in"
            " [performance.md](performance.md). Here both registries keep blobs in one SeaweedFS"
            " (`weed mini`) on loopback: cargobay under the prefix `cargobay/` (path-style S3,"
            " through obstore) with its metadata in PostgreSQL, distribution under `/dist` with"
            " its own S3 driver (`regionendpoint`, path-style); distribution has no database."
            " Services: SeaweedFS "
            + services.get("seaweedfs", "?")
            + ", PostgreSQL "
            + services.get("postgresql", "?")
            + " ("
            + services.get("postgresql_settings", "")
            + "). **Blob downloads are served by SeaweedFS**: both registries answer blob GETs"
            " (distribution also blob HEADs) with a 307 to a presigned URL, and the bench client"
            " follows it, so GET throughput and latency include the redirect and SeaweedFS"
            " (`redirects/op` in the last table). SeaweedFS, PostgreSQL, both registries and the"
            " client share the machine's 2 cores.",
        ]
    else:
        title = "# Performance: cargobay vs distribution"
        setup = (
            f"- cargobay {v['cargobay']} ({s['cargobay_workers']} workers, embedded SQLite +"
            " filesystem storage); distribution (docker-registry) " + v["distribution"]
        )
        about = [
            "",
            "The same cases on S3 object storage (SeaweedFS) + PostgreSQL:"
            " [performance-s3.md](performance-s3.md) (`python -m bench.run --backend s3`).",
        ]
    out = [
        title,
        "",
        f"Generated by `make bench` (`python -m bench.run{' ' + s['argv'] if s['argv'] else ''}`)"
        f" on {results['date']}.",
        *about,
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable)",
        f"- Memory: {m['memory_bytes'] / (1 << 30):.1f} GiB; kernel {m['kernel']}"
        + (f"; {m['os']}" if m["os"] else ""),
        f"- Python {m['python']}; load average at start "
        + " / ".join(f"{x:.2f}" for x in m["loadavg"])
        + (
            ", at end " + " / ".join(f"{x:.2f}" for x in m["loadavg_end"])
            if m.get("loadavg_end")
            else ""
        ),
        setup,
        "",
        "Machine limits (the ceilings the numbers below should be read against):",
        "",
        "| limit | MiB/s |",
        "| --- | ---: |",
        f"| hashlib sha256, one core, 1 MiB updates | {fmt(lim['sha256_mib_s'])} |",
        f"| loopback TCP, one stream, two processes, 1 MiB sendall/recv_into |"
        f" {fmt(lim['loopback_mib_s'])} |",
        f"| disk write, 1 MiB writes + fsync, data directory's filesystem |"
        f" {fmt(lim['disk_write_fsync_mib_s'])} |",
        *(
            [
                "| SeaweedFS PUT 64 MiB object, one stream (presigned URL, bench client) |"
                f" {fmt(lim['s3_put_mib_s'])} |",
                "| SeaweedFS GET 64 MiB object, one stream (presigned URL, bench client) |"
                f" {fmt(lim['s3_get_mib_s'])} |",
            ]
            if "s3_put_mib_s" in lim
            else []
        ),
        "",
        "## Method",
        "",
        "Both registries run on loopback on "
        + (
            "empty prefixes of one bucket (cargobay also on an empty database)"
            if s3
            else "empty data directories"
        )
        + ", started once; each case runs"
        f" against cargobay then distribution, alternating, {s['rounds']} round(s); each run lasts"
        f" {s['duration']:g} s or the case's operation budget, whichever ends first. Numbers are"
        " medians over rounds; p99 is the median over rounds of each run's p99 per-operation"
        " latency (a push is POST + PUT, or POST + PATCHes + PUT; a docker pull is all 7"
        " requests). Clients are separate processes (one per connection) with keep-alive"
        " raw-socket HTTP/1.1, 1 MiB reads and writes, no hashing of downloads; every push sends"
        " distinct bytes with digests computed before timing. Pushed blobs are deleted"
        + (" from the bucket (DeleteObjects, behind the registries' backs)" if s3 else " from disk")
        + " after each run and writeback is flushed (`sync`) before the next. The client shares the"
        " machine's cores with the server: the `client cores` column shows how much of the"
        " machine the client itself used.",
        "",
        "Seeding through the API (seconds, both registries, "
        f"{s['seed_procs']} client processes): "
        + "; ".join(
            f"{server}: " + ", ".join(f"{k} {t:.1f}" for k, t in results["seeding"][server].items())
            for server in SERVERS
            if server in results["seeding"]
        ),
        "",
        "## Throughput and latency",
        "",
        "Ratio = cargobay / distribution throughput (>1: cargobay faster).",
        "",
        "| case | unit | cargobay | distribution | ratio | p99 ms cargobay | p99 ms distribution |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        a, b = row["cargobay"], row["distribution"]
        mark = {k: " (errors)" if k in row["failed"] else "" for k in SERVERS}
        out.append(
            f"| {row['title']} | {row['unit']} | {fmt(a['value'])}{mark['cargobay']}"
            f" | {fmt(b['value'])}{mark['distribution']} | {fmt(row['ratio'])}"
            f" | {fmt(a['p99_ms'])} | {fmt(b['p99_ms'])} |"
        )
    paging = [
        f"- {row['title']}: {server} answered {fmt(row[server]['items_per_op'])} entries per"
        " request (asked for 100): it does not paginate, so each request does the whole list's work"
        for row in rows
        if row["unit"] in ("tags/s", "repos/s")
        for server in SERVERS
        if row[server]["items_per_op"] > 100
    ]
    if paging:
        out += ["", *paging]
    out += [
        "",
        "## Resources",
        "",
        "Server CPU per operation and cores used are utime+stime of the server process and all"
        " its children (/proc), sampled around each run. Peak RSS is the sum of VmHWM over those"
        " processes, reset before each run (max over rounds). `busiest` is the share of the"
        " server's CPU used by its busiest process (cargobay has 2 workers: 0.5 = even split,"
        " 1.0 = one worker did everything).",
        "",
        "| case | CPU ms/op cargobay | CPU ms/op distribution | server cores cargobay |"
        " server cores distribution | peak RSS MiB cargobay | peak RSS MiB distribution |"
        " client cores (cb / dist) | busiest cargobay process |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        a, b = row["cargobay"], row["distribution"]
        out.append(
            f"| {row['title']} | {fmt(a['cpu_ms_per_op'])} | {fmt(b['cpu_ms_per_op'])}"
            f" | {fmt(a['server_cores'], 2)} | {fmt(b['server_cores'], 2)}"
            f" | {fmt(a['peak_rss_mib'])} | {fmt(b['peak_rss_mib'])}"
            f" | {fmt(a['client_cores'], 2)} / {fmt(b['client_cores'], 2)}"
            f" | {fmt(a['busiest_share'], 2)} |"
        )
    if s3 and rows:
        out += render_services(rows)
    if not rows:  # only memory scenarios ran: no throughput or resource tables
        out = out[: out.index("## Throughput and latency") - 1]
    out += render_memory(results.get("memory", []))
    if results.get("skipped"):
        out += ["", *(f"- {note}" for note in results["skipped"])]
    failures = [(row["title"], k, msg) for row in rows for k, msg in row["failed"].items()]
    failures += [
        (record["title"], server, run["error"])
        for record in results.get("memory", [])
        for server, run in record["runs"].items()
        if run.get("errors")
    ]
    if failures or results.get("failures"):
        out += ["", "## Failures", ""]
        out += [f"- {title}, {server}: {msg}" for title, server, msg in failures]
        out += [f"- {msg}" for msg in results.get("failures", [])]
    out.append("")
    return "\n".join(out)


def render_services(rows: list[dict[str, Any]]) -> list[str]:
    """--backend s3: redirects, and the CPU the object store and the database spent per
    operation of each registry (the Resources table counts the registry processes only)."""
    out = [
        "",
        "## Object store and database",
        "",
        "CPU per operation of SeaweedFS and of PostgreSQL (postmaster, backends and its"
        " background processes) during each registry's runs (/proc, as for the servers), and the"
        " whole setup's: registry + SeaweedFS + PostgreSQL. It includes what the services did in"
        " the background meanwhile (SeaweedFS processing earlier deletes, PostgreSQL autovacuum"
        " and checkpoints): for cheap operations that can be most of it."
        " `redirects/op`: redirects the client followed per operation (1 per blob GET answered"
        " by SeaweedFS; a docker pull has 6 blob GETs).",
        "",
        "| case | redirects/op (cb / dist) | SeaweedFS CPU ms/op cargobay |"
        " SeaweedFS CPU ms/op distribution | PostgreSQL CPU ms/op cargobay |"
        " PostgreSQL CPU ms/op distribution | total CPU ms/op cargobay |"
        " total CPU ms/op distribution |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        a, b = row["cargobay"], row["distribution"]
        totals = [
            x["cpu_ms_per_op"] + sum(x[f"{service}_cpu_ms_per_op"] for service in SERVICES)
            for x in (a, b)
        ]
        out.append(
            f"| {row['title']} | {fmt(a['redirects_per_op'], 2)} / {fmt(b['redirects_per_op'], 2)}"
            f" | {fmt(a['seaweedfs_cpu_ms_per_op'])} | {fmt(b['seaweedfs_cpu_ms_per_op'])}"
            f" | {fmt(a['postgresql_cpu_ms_per_op'])} | {fmt(b['postgresql_cpu_ms_per_op'])}"
            f" | {fmt(totals[0])} | {fmt(totals[1])} |"
        )
    return out


MEMORY_LIMIT_MIB = 50


def render_memory(records: list[dict[str, Any]]) -> list[str]:
    """The "Memory" section: RSS growth of each server while blobs stream through it."""
    if not records:
        return []
    out = [
        "",
        "## Memory",
        "",
        f"Goal: server RSS grows by less than {MEMORY_LIMIT_MIB} MiB while a blob streams"
        " through it. Each scenario runs once per registry (restarted before the scenarios when"
        " throughput cases ran first), without warm-up (the blob to pull is pushed first, not"
        " measured)."
        " RSS is VmRSS summed over the server process and its descendants (cargobay: supervisor"
        " + workers), sampled from /proc every 50 ms during the operation; the baseline is the"
        " median of 5 samples just before it; growth = peak - baseline decides pass/fail."
        " `VmHWM growth` sums each process's own peak (reset before the operation): an upper"
        " bound that also catches spikes between samples. `after` is RSS 0.5 s after the"
        " operation ended. Clients generate the bytes on the fly and discard downloads.",
        "",
        "| scenario | server | baseline MiB | peak MiB | growth MiB | VmHWM growth MiB |"
        " after MiB | peak per process MiB | MiB/s | result |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for record in records:
        for server in SERVERS:
            run = record["runs"].get(server)
            if run is None:
                continue
            if run.get("errors"):
                out.append(f"| {record['title']} | {server} | — | — | — | — | — | — | — | error |")
                continue
            per_process = " + ".join(fmt(v) for v in run["peak_by_process_mib"])
            out.append(
                f"| {record['title']} | {server} | {fmt(run['baseline_mib'])}"
                f" | {fmt(run['peak_mib'])} | {fmt(run['growth_mib'])}"
                f" | {fmt(run['hwm_growth_mib'])} | {fmt(run['after_mib'])} | {per_process}"
                f" | {fmt(run['mib_per_s'])} | {'pass' if run['passed'] else '**FAIL**'} |"
            )
    return out


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
