#!/usr/bin/env python3
"""`make bench` driver (run by scripts/bench.sh inside scripts/with-postgres.sh).

Starts our binaries (STACK_BIN_DIR) and the Go baselines (bench/go: grpc-go and connect-go) on
the throwaway PostgreSQL at TEST_DATABASE_URL, seeds users, measures each case in two
load shapes (warm-up, then ROUNDS rounds, medians) with ghz (gRPC), vegeta (Connect
JSON over HTTP/1.1) or, for the server on one core, h2load (gRPC, one fixed request), reads the servers' CPU time and peak RSS from /proc, runs pgbench
on the same SELECT at the pool's size as the database's ceiling, runs the WatchOrder
fan-out once (bench/go/cmd/watch-fanout against two orders replicas) and GetUser's
instructions per call under callgrind (ours and bare tonic), and writes
bench/results/<UTC time>[-quick].md, .json and .svg (the latency percentiles as a chart), then
prints the table with the ratios. `bench.py --plot RESULT.json` draws an earlier run's chart.

Env: GHZ, VEGETA, H2LOAD, VALGRIND, GO_BASELINE and WATCH_FANOUT (the tools and the Go programs, as
scripts/bench.sh builds them), STACK_BIN_DIR (the binaries; default target/production), BENCH_QUICK=1 (one short
round per case: checks the harness, numbers are indicative only), BENCH_ROUNDS,
BENCH_DURATION (seconds per round), BENCH_WARMUP (seconds), BENCH_USERS (rows seeded),
BENCH_WATCHERS (WatchOrder streams), BENCH_KEEP_LOGS=1 (keep the servers' logs),
BENCH_CASES (one case name, or names separated by `;`; a list without `;` is split at
commas; default all but the optional ones, which only BENCH_CASES runs: grpc-go's Health
Check and grpc-go without middleware, the Go side of the two ratios issue 9 sets against
bare tonic, measured on demand to keep a full run under 15 minutes).
"""

import base64
import csv
import datetime
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("BENCH_QUICK") == "1"
# A full run: 23 case shapes (12 cases, one of them in one shape) x (1 s warm-up + 3 rounds
# x 3 s) = 230 s, plus pgbench (3 x 3 s), the WatchOrder fan-out (~30 s), the instructions
# case (~40 s) and start-up: about 5 minutes, so that with the `production` build and the Go
# tools a fresh machine finishes in under 15 (docs/perf.md, section 18; runs before
# 2026-12-06 15:10 UTC had rounds of 4 s).
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "3"))
DURATION = int(os.environ.get("BENCH_DURATION", "2" if QUICK else "3"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "1"))
SEEDED = int(os.environ.get("BENCH_USERS", "10000"))
# The pool size of every server under test (the services' default, database.max_connections).
POOL = 10
# (connections, requests in flight): one client multiplexing, and many clients. HTTP/1.1
# carries one call at a time per connection, so the Connect JSON cases open as many
# connections as calls in flight (8 x 8, 200 x 200).
SHAPES = [(1, 8), (50, 200)]
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIN = Path(os.environ.get("STACK_BIN_DIR", ROOT / "target" / "production"))
GHZ = os.environ.get("GHZ", "ghz")
H2LOAD = os.environ.get("H2LOAD", "h2load")
VEGETA = os.environ.get("VEGETA", "vegeta")
GO_BASELINE = os.environ.get("GO_BASELINE", str(ROOT / "target" / "bench" / "users-go"))
WATCH_FANOUT = os.environ.get("WATCH_FANOUT", str(ROOT / "target" / "bench" / "watch-fanout"))
# The WatchOrder fan-out case: this many streams over two orders replicas, on WATCHED_ORDERS
# orders, through WATCH_CONNECTIONS HTTP/2 connections per replica.
WATCHERS = int(os.environ.get("BENCH_WATCHERS", "1000" if QUICK else "10000"))
WATCHED_ORDERS = 10
WATCH_CONNECTIONS = 50
# Streams being opened at once at the most: each first reads its order's events from a pool of 10.
WATCH_OPENING = 100
# The hedging case: one of two users replicas holds this share of its calls for 50 ms
# (the test-only `testing.*` knobs); orders balances round robin over both, so that share
# of half the calls is slow. With hedging on, GetUserByEmail gets a second attempt to the
# other replica after HEDGING_DELAY (BENCH_HEDGING_DELAY): 7 ms, a little above the slowest of
# GetUserByEmail's normal answers at 1 x 8, as gRFC A6 advises (a delay near the method's
# tail latency), so hedges go to the slow calls only (docs/perf.md, hedging delay). Both
# orders of the case get a retry budget of HEDGE_BUDGET retries or hedges per call and no
# reserve (`users.retry_budget`: ratio, min_per_second 0), so hedges are held to the
# target's 10% extra calls by the budget, not by how many calls happen to be slow.
SLOW_SHARE = "0.2"
HEDGE_BUDGET = "0.1"
SLOW_DELAY = "50ms"
HEDGING_DELAY = os.environ.get("BENCH_HEDGING_DELAY", "7ms")
WATCH_CASE = "WatchOrder fan-out"
# Instructions per call under callgrind (Valgrind): repeatable to 1-3%, where CPU time
# moves 8% between runs of the same binaries, so the stack's cost against bare tonic shows
# to a few percent (docs/perf.md, section 17). GetUser only, after a warm-up of 500 calls.
INSTRUCTIONS_CASE = "GetUser instructions per call (callgrind)"
INSTRUCTION_CALLS = 500 if QUICK else 3000
VALGRIND = os.environ.get("VALGRIND", "valgrind")
PROTO = ROOT / "proto"
# grpc.health.v1 (github.com/grpc/grpc-proto), the part ghz needs: it is not in proto/.
HEALTH_PROTO = """syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"""

# Env every service process under test gets. THE ONE PLACE for settings the bench needs
# switched off: when the services gain authentication (auth.mode), add
# "USERS_AUTH__MODE": "none" and "ORDERS_AUTH__MODE": "none" here (unknown keys exit 78,
# so they cannot be added before the key exists).
BENCH_ENV = {"RUST_LOG": "info", "USERS_AUTH__MODE": "none", "ORDERS_AUTH__MODE": "none"}

# Users are seeded with ids and emails derived from their number, so ghz's templates can
# pick a random existing one.
ID_PREFIX = "00000000-0000-4000-8000-"
GET_USER_DATA = '{"id": "' + ID_PREFIX + '{{printf `%012d` (randomInt 0 ' + str(SEEDED) + ')}}"}'
CREATE_ORDER_DATA = (
    '{"customer_email": "user{{randomInt 0 ' + str(SEEDED) + '}}@bench.example", '
    '"total_cents": 1999, "currency": "EUR"}'
)


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Server:
    """A started binary: its pid, gRPC address and log file."""

    def __init__(self, name, command, env, workdir):
        """`command`: a release binary's name (in STACK_BIN_DIR) or a full argument list."""
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "w")
        if isinstance(command, str):
            command = [str(BIN / command)]
        # taskset and valgrind run the binary named last.
        if not Path(command[-1] if Path(command[0]).name in ("taskset", "valgrind") else command[0]).is_file():
            sys.exit(f"bench: {command[0]} not found: run `make bench` (it builds them) "
                     "or scripts/bench.sh")
        self.process = subprocess.Popen(
            command, env={**os.environ, **BENCH_ENV, **env}, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        self.started = time.monotonic()
        self.address, self.admin_address = self._wait_for_address()
        self.start_ms = (time.monotonic() - self.started) * 1000

    def _wait_for_address(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"bench: {self.name} exited with {self.process.returncode}; see {self.log_path}")
            for line in self.log_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                fields = {**record, **record.get("fields", {})}
                if fields.get("address"):
                    return fields["address"], fields.get("admin_address")
            time.sleep(0.02)
        sys.exit(f"bench: {self.name} did not listen within 60 s; see {self.log_path}")

    def cpu_seconds(self):
        """utime + stime of the process (all its threads), in seconds."""
        return proc_cpu_seconds(self.process.pid)

    def rss_kib(self):
        """VmRSS: the resident memory of the process now, in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def peak_rss_kib(self):
        """VmHWM: the most resident memory the process has had, in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return None

    def samples(self, name, labels):
        """The samples of `name` on the admin port's /metrics whose labels include every
        `key="value"` of `labels`: a list of (label text, value)."""
        with urllib.request.urlopen(f"http://{self.admin_address}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        found = []
        for line in text.splitlines():
            match = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
            if match and match[1] == name and all(w in (match[2] or "") for w in wanted):
                found.append((match[2] or "", float(match[3])))
        return found

    def metric(self, name, labels):
        """The sum of `samples(name, labels)` (0 when there are none)."""
        return sum(value for _, value in self.samples(name, labels))

    def metric_by(self, name, label, labels):
        """The sum of `samples(name, labels)` per value of `label`: {value: sum}."""
        totals = {}
        for text, value in self.samples(name, labels):
            found = re.search(rf'\b{label}="([^"]*)"', text)
            if found:
                totals[found[1]] = totals.get(found[1], 0) + value
        return totals

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log_file.close()


def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3, utime 14, stime 15 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu_seconds(postmaster):
    """CPU of the PostgreSQL server and its backends (children of the postmaster), those that
    have exited included: a backend's time moves into the postmaster's cutime and cstime when
    it is reaped. Without them, a pool closing idle connections during a round took their
    CPU out of the sum, and the database's CPU per call came out negative."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields from the state on (proc(5) numbers them from 3): utime, stime, cutime,
            # cstime are 14-17.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == postmaster:
                total += sum(int(f) for f in fields[11:15]) / CLK_TCK
            elif int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            continue
    return total


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True, stdout=subprocess.DEVNULL)


def seed_users(url):
    """Stores SEEDED users, numbered from 0: the ids and emails the ghz templates pick from."""
    psql(url, f"INSERT INTO users (id, email, name, created_at) SELECT '{ID_PREFIX}' || lpad(i::text, 12, '0'), "
              f"'user' || i || '@bench.example', 'User ' || i, 0 FROM generate_series(0, {SEEDED - 1}) AS i; "
              "ANALYZE users")


def percentile(sorted_values, share):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(share * len(sorted_values)) - 1))
    return sorted_values[index]


def run_result(count, rps, latencies, statuses):
    """What one load run returns: its calls, req/s, the percentiles of `latencies` (sorted,
    ms) and the statuses counted."""
    return {
        "count": count,
        "rps": rps,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "p999_ms": percentile(latencies, 0.999),
        "statuses": statuses,
    }


def ghz(case, shape, seconds, workdir):
    """One ghz run; returns its count, req/s, latency percentiles (ms) and status counts."""
    connections, concurrency = shape
    out = workdir / "ghz.json"
    command = [
        GHZ, "--insecure", "--format", "json", "--output", str(out),
        "--connections", str(connections), "--concurrency", str(concurrency),
        "--duration", f"{seconds}s", "--timeout", "10s",
        "--call", case["call"], "--data", case["data"],
    ]
    proto = Path(case["proto"])
    command += ["--import-paths", str(proto.parent), "--proto", str(proto)]
    command.append(case["target"]())
    ran = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if ran.returncode != 0:
        raise RuntimeError(f"ghz failed on {case['name']}: {ran.stderr.strip()[:500]}")
    report = json.loads(out.read_text())
    details = report.get("details") or []
    latencies = sorted(d["latency"] / 1e6 for d in details if d.get("status", "OK") == "OK")
    statuses = {}
    for d in details:
        statuses[d.get("status", "OK")] = statuses.get(d.get("status", "OK"), 0) + 1
    return run_result(report["count"], report["rps"], latencies, statuses)


def get_user_request(n):
    """users.v1.GetUserRequest for seeded user `n`, encoded: field 1 (`id`), a string."""
    user_id = f"{ID_PREFIX}{n:012d}".encode()
    return b"\x0a" + bytes([len(user_id)]) + user_id


def grpc_frame(message):
    """`message` (encoded protobuf) as one uncompressed gRPC message: flag 0, then its length
    as 4 bytes big-endian (gRPC over HTTP/2, "Length-Prefixed-Message")."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load(case, shape, seconds, workdir):
    """One h2load run (nghttp2's HTTP/2 load generator, C): as `ghz`, but the request is one
    fixed gRPC message (`case["body"]`) and h2load costs a fraction of ghz's CPU per call, so
    it can drive a server core to its limit from the other core. h2load reads no trailers,
    so the gRPC codes come from the server's `grpc_server_handled_total` (`case["codes"]`,
    read before and after); latencies are those of the calls answered with HTTP 200."""
    connections, concurrency = shape
    body, requests = workdir / "h2load-body.bin", workdir / "h2load-requests.tsv"
    body.write_bytes(case["body"])
    requests.unlink(missing_ok=True)  # h2load appends to its log file
    codes_before = case["codes"]()
    command = [
        *case.get("pin", []), H2LOAD, "--clients", str(connections), "--threads", "1",
        "--max-concurrent-streams", str(concurrency // connections), "--duration", str(seconds),
        "--data", str(body), "--header", "content-type: application/grpc", "--header", "te: trailers",
        "--log-file", str(requests), f"http://{case['target']()}/{case['call']}",
    ]
    ran = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", ran.stdout)
    if ran.returncode != 0 or not finished:
        raise RuntimeError(f"h2load failed on {case['name']}: {(ran.stderr or ran.stdout).strip()[:500]}")
    # Columns: start (us since the epoch), HTTP status (-1: no answer), latency (us).
    rows = [line.split("\t") for line in requests.read_text().splitlines() if line.strip()]
    latencies = sorted(int(r[2]) / 1e3 for r in rows if r[1] == "200")
    codes_after = case["codes"]()
    statuses = {code: round(n - codes_before.get(code, 0)) for code, n in codes_after.items()
                if n > codes_before.get(code, 0)}
    return run_result(len(latencies), float(finished[2]), latencies, statuses)


def instructions_per_call(server, body, call, workdir):
    """User-space instructions `server` (started under callgrind) runs per call of `call`
    with the gRPC request `body`, from h2load (10 connections x 4 streams): callgrind's
    counters are zeroed after 500 calls, then dumped after INSTRUCTION_CALLS more. Every
    thread of the process counts (the log writer and the span exporter too); the kernel's
    share (sockets, scheduling) does not."""
    request = workdir / "instructions-body.bin"
    request.write_bytes(body)

    def calls(n):
        ran = subprocess.run([
            H2LOAD, "--clients", "10", "--threads", "1", "--max-concurrent-streams", "4", "--requests", str(n),
            "--data", str(request), "--header", "content-type: application/grpc", "--header", "te: trailers",
            f"http://{server.address}/{call}",
        ], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        succeeded = re.search(r"(\d+) succeeded", ran.stdout)
        if ran.returncode != 0 or not succeeded:
            raise RuntimeError(f"h2load failed on {server.name}: {(ran.stderr or ran.stdout).strip()[:500]}")
        return int(succeeded[1])

    control = str(Path(shutil.which(VALGRIND) or VALGRIND).with_name("callgrind_control"))
    pid = server.process.pid
    calls(500)
    subprocess.run([control, "--zero", str(pid)], check=True, stdout=subprocess.DEVNULL)
    answered = calls(INSTRUCTION_CALLS)
    # The dump is written to callgrind.PID.1 (the --callgrind-out-file pattern, then .1).
    dump = workdir / f"callgrind.{pid}.1"
    subprocess.run([control, "--dump", str(pid)], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        totals = re.search(r"^(?:summary|totals): (\d+)", dump.read_text() if dump.exists() else "", re.M)
        if totals:
            return {"calls": answered, "instructions_per_call": int(totals[1]) / answered}
        time.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no dump for {server.name} within 60 s")


def connect_targets(url, workdir):
    """vegeta's JSON targets: a Connect unary POST of GetUser for every seeded id, in a
    shuffled order (fixed seed) that vegeta cycles through, so the ids asked for spread
    over the table as ghz's random ones do."""
    path = workdir / f"targets-{len(list(workdir.glob('targets-*')))}.jsonl"
    ids = list(range(SEEDED))
    random.Random(9).shuffle(ids)
    header = {"Content-Type": ["application/json"], "Connect-Protocol-Version": ["1"]}
    with open(path, "w") as out:
        for n in ids:
            body = json.dumps({"id": f"{ID_PREFIX}{n:012d}"}).encode()
            out.write(json.dumps({"method": "POST", "url": url, "header": header,
                                  "body": base64.b64encode(body).decode()}) + "\n")
    return path


def vegeta(case, shape, seconds, workdir):
    """One closed-loop vegeta run over HTTP/1.1 with as many connections as calls in
    flight; returns the same figures as `ghz`, statuses by HTTP code."""
    in_flight = shape[1]
    results = workdir / "vegeta.bin"
    command = [
        VEGETA, "attack", "-format=json", f"-targets={case['targets']()}", "-rate=0",
        f"-workers={in_flight}", f"-max-workers={in_flight}", f"-max-connections={in_flight}",
        f"-connections={in_flight}", "-http2=false", f"-duration={seconds}s", "-timeout=10s",
        f"-output={results}",
    ]
    ran = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if ran.returncode != 0:
        raise RuntimeError(f"vegeta failed on {case['name']}: {ran.stderr.strip()[:500]}")
    encoded = subprocess.run([VEGETA, "encode", "--to=csv", str(results)], check=True,
                             capture_output=True, text=True).stdout
    # Columns: timestamp (Unix ns), HTTP code (0: no answer), latency (ns), bytes out, bytes in, error, ...
    rows = list(csv.reader(encoded.splitlines()))
    latencies = sorted(int(r[2]) / 1e6 for r in rows if r[1] == "200")
    statuses = {}
    for r in rows:
        code = f"HTTP {r[1]}" if r[1] != "0" else "no answer"
        statuses[code] = statuses.get(code, 0) + 1
    span = (max(int(r[0]) + int(r[2]) for r in rows) - min(int(r[0]) for r in rows)) / 1e9 if rows else 0
    return run_result(len(rows), len(rows) / span if span else 0, latencies, statuses)


def measure(case, shape, servers, postmaster, workdir):
    """Warm-up, then ROUNDS measured rounds; each round also reads server and database CPU,
    and the case's counters (`case["counters"]`: name -> function reading it) before and after."""
    run = {"vegeta": vegeta, "h2load": h2load}.get(case.get("tool"), ghz)
    run(case, shape, WARMUP, workdir)
    counters = case.get("counters", {})
    rounds = []
    for _ in range(ROUNDS):
        before = [s.cpu_seconds() for s in servers]
        db_before = postgres_cpu_seconds(postmaster)
        counted_before = {name: read() for name, read in counters.items()}
        result = run(case, shape, DURATION, workdir)
        after = [s.cpu_seconds() for s in servers]
        db_after = postgres_cpu_seconds(postmaster)
        calls = max(result["count"], 1)
        result["server_cpu_us_per_call"] = (sum(after) - sum(before)) * 1e6 / calls
        result["db_cpu_us_per_call"] = (db_after - db_before) * 1e6 / calls
        for name, read in counters.items():
            result[f"{name}_per_call"] = (read() - counted_before[name]) / calls
        rounds.append(result)
    median = lambda key: statistics.median(r[key] for r in rounds if r[key] is not None) if any(
        r[key] is not None for r in rounds) else None
    statuses = {}
    for r in rounds:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    per_call = {name: median(f"{name}_per_call") for name in counters}
    connections = shape[1] if case.get("tool") == "vegeta" else shape[0]
    return {
        "case": case["name"],
        "shape": f"{connections} x {shape[1]}",
        "protocol": case.get("protocol", "gRPC"),
        "counters_per_call": per_call,
        "rounds": len(rounds),
        "rps": median("rps"),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "p999_ms": median("p999_ms"),
        "server_cpu_us_per_call": median("server_cpu_us_per_call"),
        "db_cpu_us_per_call": median("db_cpu_us_per_call"),
        "statuses": statuses,
        "peak_rss_mib": {s.name: round(s.peak_rss_kib() / 1024, 1) for s in servers},
        "all_rounds": rounds,
    }


def watch_fanout(replicas):
    """The WatchOrder fan-out: WATCHERS streams over `replicas` (orders servers); event
    delivery latency from watch-fanout, and the replicas' resident memory per watcher."""
    before = sum(r.rss_kib() for r in replicas)
    command = [
        WATCH_FANOUT, "-targets", ",".join(r.address for r in replicas), "-watchers", str(WATCHERS),
        "-connections", str(WATCH_CONNECTIONS), "-orders", str(WATCHED_ORDERS), "-opening", str(WATCH_OPENING),
    ]
    tool = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = tool.stderr.readline()
    if line.strip() != "ready":
        tool.kill()
        raise RuntimeError(f"watch-fanout did not get ready: {line.strip()} {tool.stderr.read().strip()[:500]}")
    holding = sum(r.rss_kib() for r in replicas)
    out, err = tool.communicate("\n", timeout=600)
    if tool.returncode != 0:
        raise RuntimeError(f"watch-fanout failed: {err.strip()[:500]}")
    result = json.loads(out)
    result["replicas"] = len(replicas)
    result["connections_per_replica"] = WATCH_CONNECTIONS
    result["rss_kib_per_watcher"] = (holding - before) / WATCHERS
    return result


def pgbench(url, workdir):
    """The SELECT GetUser runs, by POOL clients with prepared statements: the database's ceiling."""
    script = workdir / "get_user.sql"
    script.write_text(
        f"\\set n random(0, {SEEDED - 1})\n"
        f"SELECT id, email, name, created_at FROM users WHERE id = '{ID_PREFIX}' || lpad(:n::text, 12, '0');\n"
    )
    runs = []
    for _ in range(ROUNDS):
        out = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", str(POOL), "-j", "2", "-T", str(DURATION), "-f", str(script), url],
            check=True, capture_output=True, text=True,
        ).stdout
        for line in out.splitlines():
            if line.startswith("tps = "):
                runs.append(float(line.split()[2]))
    return {"clients": POOL, "rounds": len(runs), "tps": statistics.median(runs)}


def machine():
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg()[0],
        "commit": commit,
        # Binaries from elsewhere (an older commit's, to compare): the commit above is the harness's only.
        "binaries": None if BIN == ROOT / "target" / "production" else str(BIN),
        "postgres": subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip(),
    }


def fmt(value, digits=0):
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(run):
    m = run["machine"]
    lines = [
        f"# Benchmark {run['started']}" + (" (QUICK: 1 short round; harness check, indicative only)" if run["quick"] else ""),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"load average {m['load_average_at_start']:.1f} at start; {m['postgres']}; commit {m['commit']}"
        + (f", binaries from {m['binaries']}." if m.get("binaries") else "."),
        f"The load generators (ghz for gRPC, vegeta for Connect JSON over HTTP/1.1, h2load for the server on one "
        f"core, pinned to the other cores) and the servers share the machine. {run['rounds']} round(s) of {run['duration_s']} s after a "
        f"{run['warmup_s']} s warm-up, medians; latency in ms; CPU in microseconds per call "
        "(utime+stime from /proc of the server processes / of PostgreSQL). grpc-go and connect-go serve the same "
        "GetUser from the same table with pgx at the same pool size (bench/go).",
        "",
        "| case | conns x in flight | req/s | p50 | p99 | p99.9 | server CPU us/call | db CPU us/call | statuses | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in run["results"]:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))
        rss = ", ".join(f"{k} {v}" for k, v in r["peak_rss_mib"].items())
        lines.append(
            f"| {r['case']} | {r['shape']} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | "
            f"{fmt(r['p999_ms'], 2)} | {fmt(r['server_cpu_us_per_call'])} | {fmt(r['db_cpu_us_per_call'])} | "
            f"{statuses} | {rss} |"
        )
    lines.append("")
    for note in run["ratios"]:
        lines.append(f"- {note}")
    lines.append(
        "- Ratios read A / B: a throughput above 1, a p99 or CPU per call below 1, favour A. Hedging's extra "
        "calls are the replicas' `grpc_server_started_total` for GetUserByEmail per CreateOrder, less one."
    )
    lines.append(
        "- Statuses: Unavailable up to the number in flight per round is consistent with ghz cutting "
        "calls off when a round's time is up (not checked call by call); h2load's cut-off calls are counted "
        "by the server, as Canceled. Connect JSON statuses are HTTP codes."
    )
    w = run.get("watch_fanout")
    if w:
        errors = ", ".join(f"{k} x{v}" for k, v in w["errors"].items()) or "none"
        lines.append(
            f"- {WATCH_CASE}: {w['watchers']:,} WatchOrder streams over {w['replicas']} orders replicas "
            f"({w['connections_per_replica']} connections each), open in {w['setup_ms'] / 1000:.1f} s; "
            f"{w['received']:,} of {w['events']:,} events delivered, from the Ship/DeliverOrder call to the "
            f"watcher p50 {fmt(w['p50_ms'], 2)} ms, p99 {fmt(w['p99_ms'], 2)} ms, max {fmt(w['max_ms'], 2)} ms; "
            f"orders' resident memory {fmt(w['rss_kib_per_watcher'], 1)} KiB per watcher; stream errors: {errors}."
        )
    i = run.get("instructions")
    if i:
        users, bare = i["users"]["instructions_per_call"], i["bare_users"]["instructions_per_call"]
        lines.append(
            f"- {INSTRUCTIONS_CASE}: the stack {fmt(users)}, bare tonic {fmt(bare)}: **{users / bare:.2f}x** "
            f"(user space, every thread; {i['users']['calls']:,} calls of one fixed request after 500, h2load 10 x 4; "
            "repeatable to 1-3%, where CPU time per call moves about 8% between runs)."
        )
    pg = run.get("pgbench")
    if pg:
        lines.append(
            f"- Database ceiling: pgbench runs the GetUser SELECT {fmt(pg['tps'])} times a second "
            f"({pg['clients']} clients = the pool size, prepared statements)."
        )
    starts = ", ".join(f"{k} {v:.0f} ms" for k, v in run["start_ms"].items())
    lines.append(f"- Start to listening: {starts}.")
    return "\n".join(lines) + "\n"


def svg(run):
    """The run's latency percentiles as an SVG chart: a row per case and shape, p50 and p99 as
    bars on a logarithmic axis (0.1 ms to 1 s), p99.9 as a tick, the values written beside."""
    from html import escape
    low, high = -1.0, 3.0  # log10 of the axis ends, in ms
    label_w, plot_w, values_w, row_h, top = 330, 520, 250, 22, 56
    rows = [r for r in run["results"] if r["p50_ms"] is not None]
    width, height = label_w + plot_w + values_w, top + row_h * len(rows) + 30

    def x(ms):
        share = (min(max(math.log10(max(ms, 1e-9)), low), high) - low) / (high - low)
        return label_w + share * plot_w

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">Latency per call, ms (log scale): '
        f'p50 and p99 bars, p99.9 tick; {escape(run["started"])}, commit {escape(run["machine"]["commit"])}</text>',
    ]
    for ms in (0.1, 1, 10, 100, 1000):
        parts.append(f'<line x1="{x(ms):.1f}" y1="{top - 8}" x2="{x(ms):.1f}" y2="{height - 24}" stroke="#ddd"/>')
        parts.append(f'<text x="{x(ms):.1f}" y="{top - 12}" text-anchor="middle" fill="#555">{ms:g}</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h
        p50, p99, p999 = r["p50_ms"], r["p99_ms"], r["p999_ms"] or r["p99_ms"]
        parts += [
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(r["case"])}, {escape(r["shape"])}</text>',
            f'<rect x="{label_w}" y="{y + 4}" width="{x(p99) - label_w:.1f}" height="14" fill="#f4a261"/>',
            f'<rect x="{label_w}" y="{y + 4}" width="{x(p50) - label_w:.1f}" height="14" fill="#2a9d8f"/>',
            f'<line x1="{x(p999):.1f}" y1="{y + 2}" x2="{x(p999):.1f}" y2="{y + 20}" stroke="#264653" stroke-width="2"/>',
            f'<text x="{label_w + plot_w + 8}" y="{y + 15}" fill="#333">p50 {fmt(p50, 2)}, p99 {fmt(p99, 2)}, '
            f'p99.9 {fmt(r["p999_ms"], 2)}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def ratio(a, b):
    return None if a is None or not b else a / b


def compare(ours, theirs, label):
    """One summary line: `ours` against `theirs` (results at the same shape) by throughput,
    p99 and server CPU per call; None when either is missing."""
    if not ours or not theirs:
        return None
    parts = [("throughput", "rps"), ("p99", "p99_ms"), ("CPU/call", "server_cpu_us_per_call")]
    figures = ", ".join(f"{name} {fmt(ratio(ours[key], theirs[key]), 2)}x" for name, key in parts)
    shape = ours["shape"] if ours["shape"] == theirs["shape"] else f"{ours['shape']} vs {theirs['shape']}"
    return f"{label} at {shape}: {figures}."


def ratios(results):
    """The summary lines, per number of calls in flight (the Connect JSON cases open one
    connection per call in flight, the gRPC ones share fewer)."""
    in_flight = lambda r: r["shape"].split(" x ")[1]
    by = {(r["case"], in_flight(r)): r for r in results}
    notes = []
    for flight in {in_flight(r) for r in results}:
        get = lambda case: by.get((case, flight))
        full, bare = get("GetUser"), get("GetUser, bare tonic")
        if full and bare and bare["server_cpu_us_per_call"] and bare["rps"]:
            shape = full["shape"]
            notes.append(
                f"Middleware stack at {shape}: GetUser costs {full['server_cpu_us_per_call'] / bare['server_cpu_us_per_call']:.2f}x "
                f"the bare-tonic CPU per call, at {full['rps'] / bare['rps']:.2f}x its throughput."
            )
        health = get("Health Check")
        if full and health and full["server_cpu_us_per_call"] is not None:
            notes.append(
                f"Database part of GetUser at {full['shape']}: {full['server_cpu_us_per_call'] - health['server_cpu_us_per_call']:.0f} us "
                "of server CPU per call (GetUser minus Health Check)."
            )
        go, go_bare, go_health = get("GetUser, grpc-go"), get("GetUser, grpc-go without middleware"), get("Health Check, grpc-go")
        if go and go_bare and go_bare["server_cpu_us_per_call"]:
            notes.append(
                f"grpc-go's middleware at {go['shape']}: GetUser costs {go['server_cpu_us_per_call'] / go_bare['server_cpu_us_per_call']:.2f}x "
                f"the CPU per call of grpc-go without it, at {go['rps'] / go_bare['rps']:.2f}x its throughput."
            )
        if go and go_health and go["server_cpu_us_per_call"] is not None:
            notes.append(
                f"Database part of grpc-go's GetUser at {go['shape']}: {go['server_cpu_us_per_call'] - go_health['server_cpu_us_per_call']:.0f} us "
                "of server CPU per call (GetUser minus Health Check)."
            )
        notes.append(compare(full, go, "GetUser, ours / grpc-go"))
        notes.append(compare(full, get("GetUser, connect-go (gRPC)"), "GetUser over gRPC, ours / connect-go"))
        notes.append(compare(get("GetUser, Connect JSON"), get("GetUser, Connect JSON, connect-go"),
                             "GetUser over Connect JSON, ours / connect-go"))
        notes.append(compare(get("GetUser, Connect JSON"), get("GetUser, Connect JSON, connect-go with interceptors"),
                             "GetUser over Connect JSON, ours / connect-go with interceptors"))
        notes.append(compare(get("GetUser, Connect JSON"), full, "GetUser, ours: Connect JSON / gRPC"))
        off, on = get("CreateOrder, slow replica, hedging off"), get("CreateOrder, slow replica, hedging on")
        if off and on and on["p99_ms"]:
            extra = lambda r: (r["counters_per_call"].get("users_calls") or 1) - 1
            notes.append(
                f"Hedging at {on['shape']} (one of two users replicas holds {float(SLOW_SHARE):.0%} of its calls for "
                f"{SLOW_DELAY}; hedging delay {HEDGING_DELAY}; retry budget {HEDGE_BUDGET} per call): CreateOrder p99 {fmt(off['p99_ms'], 1)} ms off, "
                f"{fmt(on['p99_ms'], 1)} ms on (off / on {off['p99_ms'] / on['p99_ms']:.2f}x); hedges sent "
                f"{fmt(100 * (on['counters_per_call'].get('hedges') or 0), 1)}% of calls; GetUserByEmail calls the "
                f"replicas started per CreateOrder: {fmt(1 + extra(off), 3)} off, {fmt(1 + extra(on), 3)} on "
                f"({fmt(100 * (extra(on) - extra(off)), 1)}% extra); throughput {fmt(ratio(on['rps'], off['rps']), 2)}x."
            )
    return sorted(note for note in notes if note)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--plot":
        # Draw the chart of an earlier run's JSON again, beside it.
        path = Path(sys.argv[2])
        path.with_suffix(".svg").write_text(svg(json.loads(path.read_text())))
        return
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        sys.exit("bench: TEST_DATABASE_URL is unset: run through scripts/bench.sh")
    if not shutil.which(GHZ):
        sys.exit(f"bench: ghz not found at {GHZ}: run through scripts/bench.sh")
    if not shutil.which(H2LOAD):
        sys.exit(f"bench: h2load not found at {H2LOAD}: run through scripts/bench.sh")
    started = datetime.datetime.now(datetime.timezone.utc)
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    users_url, orders_url = f"{base}/users_bench", f"{base}/orders_bench"
    psql(f"{base}/postgres", "CREATE DATABASE users_bench")
    psql(f"{base}/postgres", "CREATE DATABASE orders_bench")
    postmaster = int(subprocess.run(
        ["psql", "-At", f"{base}/postgres", "-c", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"],
        capture_output=True, text=True, check=True).stdout.split()[0])
    postmaster = int(Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()[1])

    servers = {}
    pool = str(POOL)

    def users_env(**extra):
        return {"USERS_SERVER__PORT": "0", "USERS_ADMIN__PORT": "0", "USERS_DATABASE__URL": users_url,
                "USERS_DATABASE__MAX_CONNECTIONS": pool, **extra}

    def orders_env(*upstreams, **extra):
        endpoints = ",".join(f"http://{server(name).address}" for name in upstreams)
        return {"ORDERS_SERVER__PORT": "0", "ORDERS_ADMIN__PORT": "0", "ORDERS_DATABASE__URL": orders_url,
                "ORDERS_DATABASE__MAX_CONNECTIONS": pool, "ORDERS_USERS__ENDPOINTS": f"[{endpoints}]", **extra}

    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[-1]
    load_pin = ["taskset", "-c", ",".join(map(str, cores[:-1]))] if len(cores) > 1 else []
    go_env = {"BENCH_GO_DATABASE_URL": users_url, "BENCH_GO_MAX_CONNECTIONS": pool}
    budget = {"ORDERS_USERS__RETRY_BUDGET__RATIO": HEDGE_BUDGET, "ORDERS_USERS__RETRY_BUDGET__MIN_PER_SECOND": "0"}
    hedging = {"ORDERS_USERS__HEDGING_POLICY__GETUSERBYEMAIL__MAXATTEMPTS": "2",
               "ORDERS_USERS__HEDGING_POLICY__GETUSERBYEMAIL__HEDGINGDELAY": HEDGING_DELAY, **budget}
    # Room for the fan-out's streams (the defaults cap open streams at 1,024 per process).
    streams = {"ORDERS_SERVER__MAX_OPEN_STREAMS": str(WATCHERS + 1000)}
    callgrind = [VALGRIND, "--tool=callgrind", f"--callgrind-out-file={workdir}/callgrind.%p"]
    bare_env = {"BARE_USERS_DATABASE_URL": users_url, "BARE_USERS_MAX_CONNECTIONS": pool}
    # How each server starts: on first use, so BENCH_CASES starts only what its cases need.
    starters = {
        "users": lambda: Server("users", "users", users_env(), workdir),
        # Issue 9's one-core case: the server pinned to the last core, its load generator to the others.
        "users_one_core": lambda: Server("users_one_core", ["taskset", "-c", str(server_core),
                                                            str(BIN / "users")], users_env(), workdir),
        "bare_users": lambda: Server("bare_users", "bare_users", bare_env, workdir),
        # The instructions case: each binary under callgrind (about 50 times slower).
        "users_callgrind": lambda: Server("users_callgrind", [*callgrind, str(BIN / "users")], users_env(), workdir),
        "bare_users_callgrind": lambda: Server("bare_users_callgrind", [*callgrind, str(BIN / "bare_users")], bare_env,
                                               workdir),
        "orders": lambda: Server("orders", "orders", orders_env("users"), workdir),
        "grpc_go": lambda: Server("grpc_go", [GO_BASELINE, "-protocol", "grpc"], go_env, workdir),
        "grpc_go_bare": lambda: Server("grpc_go_bare", [GO_BASELINE, "-protocol", "grpc-bare"], go_env, workdir),
        "connect_go": lambda: Server("connect_go", [GO_BASELINE, "-protocol", "connect"], go_env, workdir),
        "connect_go_observed": lambda: Server("connect_go_observed", [GO_BASELINE, "-protocol", "connect-observed"],
                                              go_env, workdir),
        # The hedging case's own replicas and orders, so the other cases' servers stay unloaded.
        "users_a": lambda: Server("users_a", "users", users_env(), workdir),
        "users_slow": lambda: Server("users_slow", "users", users_env(
            USERS_TESTING__ENABLED="true", USERS_TESTING__DELAY_RATIO=SLOW_SHARE, USERS_TESTING__DELAY=SLOW_DELAY),
            workdir),
        "orders_unhedged": lambda: Server("orders_unhedged", "orders", orders_env("users_a", "users_slow", **budget),
                                          workdir),
        "orders_watch_a": lambda: Server("orders_watch_a", "orders", orders_env("users", **streams), workdir),
        "orders_watch_b": lambda: Server("orders_watch_b", "orders", orders_env("users", **streams), workdir),
        "orders_hedged": lambda: Server("orders_hedged", "orders", orders_env("users_a", "users_slow", **hedging),
                                        workdir),
    }

    def server(name):
        if name not in servers:
            servers[name] = starters[name]()
        return servers[name]

    def address(name):
        return lambda: server(name).address

    def by_email_calls(name):
        """GetUserByEmail calls the users replica `name` started (hedges and cancelled ones included)."""
        return server(name).metric("grpc_server_started_total", {"grpc_method": "GetUserByEmail"})

    def hedges(name):
        return lambda: server(name).metric("grpc_client_hedges_total", {})

    targets = {}

    def connect_url(name):
        """The vegeta targets file for Connect JSON GetUser calls to `name`, written once."""
        def path():
            if name not in targets:
                targets[name] = connect_targets(f"http://{server(name).address}/users.v1.UserService/GetUser", workdir)
            return targets[name]
        return path

    try:
        server("users")
        log(f"seeding {SEEDED} users")
        seed_users(users_url)
        health = workdir / "health.proto"
        health.write_text(HEALTH_PROTO)
        users_proto, orders_proto = PROTO / "users/v1/users.proto", PROTO / "orders/v1/orders.proto"
        get_user = {"call": "users.v1.UserService/GetUser", "data": GET_USER_DATA, "proto": users_proto}
        create_order = {"call": "orders.v1.OrderService/CreateOrder", "data": CREATE_ORDER_DATA, "proto": orders_proto}
        replicas = ["users_a", "users_slow"]
        slow_counters = lambda orders: {"users_calls": lambda: sum(by_email_calls(n) for n in replicas),
                                        "hedges": hedges(orders)}
        cases = [
            {"name": "Health Check", "servers": ["users"], "call": "grpc.health.v1.Health/Check",
             "data": '{"service": ""}', "proto": health, "target": address("users")},
            {"name": "GetUser", "servers": ["users"], **get_user, "target": address("users")},
            # Issue 9's one-core target: what one server core serves, so the load comes from h2load
            # on the other cores (ghz there saturates its core before the server's; docs/perf.md,
            # section 16). Only at 50 x 200, the target's shape: the bench stays under 15 minutes.
            {"name": "GetUser, users on one core (h2load)", "servers": ["users_one_core"], "tool": "h2load",
             "call": get_user["call"], "body": grpc_frame(get_user_request(SEEDED // 2)), "pin": load_pin,
             "codes": lambda: server("users_one_core").metric_by(
                 "grpc_server_handled_total", "grpc_code", {"grpc_method": "GetUser"}),
             "target": address("users_one_core"), "shapes": SHAPES[1:]},
            {"name": "GetUser, bare tonic", "servers": ["bare_users"], **get_user, "target": address("bare_users")},
            {"name": "GetUser, grpc-go", "servers": ["grpc_go"], **get_user, "target": address("grpc_go")},
            # Optional: what grpc-go's middleware costs, and grpc-go's database part.
            {"name": "GetUser, grpc-go without middleware", "servers": ["grpc_go_bare"], **get_user,
             "target": address("grpc_go_bare"), "optional": True},
            {"name": "Health Check, grpc-go", "servers": ["grpc_go"], "call": "grpc.health.v1.Health/Check",
             "data": '{"service": ""}', "proto": health, "target": address("grpc_go"), "optional": True},
            {"name": "GetUser, connect-go (gRPC)", "servers": ["connect_go"], **get_user,
             "target": address("connect_go")},
            {"name": "GetUser, Connect JSON", "servers": ["users"], "tool": "vegeta", "protocol": "Connect JSON",
             "targets": connect_url("users")},
            {"name": "GetUser, Connect JSON, connect-go", "servers": ["connect_go"], "tool": "vegeta",
             "protocol": "Connect JSON", "targets": connect_url("connect_go")},
            {"name": "GetUser, Connect JSON, connect-go with interceptors", "servers": ["connect_go_observed"],
             "tool": "vegeta", "protocol": "Connect JSON", "targets": connect_url("connect_go_observed")},
            {"name": "CreateOrder (orders -> users)", "servers": ["orders", "users"], **create_order,
             "target": address("orders")},
            {"name": "CreateOrder, slow replica, hedging off", "servers": ["orders_unhedged", *replicas],
             **create_order, "target": address("orders_unhedged"), "counters": slow_counters("orders_unhedged")},
            {"name": "CreateOrder, slow replica, hedging on", "servers": ["orders_hedged", *replicas],
             **create_order, "target": address("orders_hedged"), "counters": slow_counters("orders_hedged")},
        ]
        # The load cases, then the two measured once, not per shape.
        names = known = [c["name"] for c in cases] + [WATCH_CASE, INSTRUCTIONS_CASE]
        wanted = os.environ.get("BENCH_CASES")
        if wanted:
            names = [wanted] if wanted in known else [n.strip() for n in wanted.split(";" if ";" in wanted else ",")]
            unknown = set(names) - set(known)
            if unknown:
                sys.exit(f"bench: unknown BENCH_CASES {sorted(unknown)}; cases: {known}")
            cases = [c for c in cases if c["name"] in names]
        else:
            cases = [c for c in cases if not c.get("optional")]
        results = []
        for case in cases:
            for name in case["servers"]:
                server(name)
            for shape in case.get("shapes", SHAPES):
                log(f"{case['name']} at {shape[0]} x {shape[1]}")
                results.append(measure(case, shape, [server(n) for n in case["servers"]], postmaster, workdir))
        watch = None
        if WATCH_CASE in names:
            log(f"{WATCH_CASE}: {WATCHERS} watchers over 2 orders replicas")
            watch = watch_fanout([server("orders_watch_a"), server("orders_watch_b")])
        instructions = None
        if INSTRUCTIONS_CASE in names:
            log(f"{INSTRUCTIONS_CASE}: {INSTRUCTION_CALLS} calls each")
            body, call = grpc_frame(get_user_request(SEEDED // 2)), get_user["call"]
            instructions = {name: instructions_per_call(server(f"{name}_callgrind"), body, call, workdir)
                            for name in ("users", "bare_users")}
            for name in ("users_callgrind", "bare_users_callgrind"):
                servers.pop(name).stop()
        log("pgbench")
        ceiling = pgbench(users_url, workdir)
        start_ms = {name: s.start_ms for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    run = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "quick": QUICK,
        "rounds": ROUNDS,
        "duration_s": DURATION,
        "warmup_s": WARMUP,
        "seeded_users": SEEDED,
        "pool_size": POOL,
        "machine": info,
        "results": results,
        "pgbench": ceiling,
        "watch_fanout": watch,
        "instructions": instructions,
        "ratios": ratios(results),
        "start_ms": start_ms,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y-%m-%dT%H%MZ") + ("-quick" if QUICK else "")
    (out / f"{stem}.json").write_text(json.dumps(run, indent=2) + "\n")
    table = markdown(run)
    (out / f"{stem}.md").write_text(table)
    (out / f"{stem}.svg").write_text(svg(run))
    if os.environ.get("BENCH_KEEP_LOGS") == "1":
        log(f"server logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table)
    log(f"wrote bench/results/{stem}.md, .json and .svg")


if __name__ == "__main__":
    main()
