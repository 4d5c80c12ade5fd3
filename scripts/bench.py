#!/usr/bin/env python3
"""`make bench` driver (run by scripts/bench.sh inside scripts/with-postgres.sh).

Starts the release binaries on the throwaway PostgreSQL at TEST_DATABASE_URL, seeds
users, measures each case with ghz in two load shapes (warm-up, then ROUNDS rounds,
medians), reads the servers' CPU time and peak RSS from /proc, runs pgbench on the
same SELECT at the pool's size as the database's ceiling, and writes
bench/results/<UTC time>[-quick].md and .json, then prints the table.

Env: GHZ (the ghz binary), STACK_BIN_DIR (release binaries), BENCH_QUICK=1 (one short
round per case: checks the harness, numbers are indicative only), BENCH_ROUNDS,
BENCH_DURATION (seconds per round), BENCH_WARMUP (seconds), BENCH_USERS (rows seeded),
BENCH_CASES (comma-separated case names, default all).
"""

import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "5"))
DURATION = int(os.environ.get("BENCH_DURATION", "2" if QUICK else "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "1" if QUICK else "3"))
SEEDED = int(os.environ.get("BENCH_USERS", "10000"))
# The pool size of every server under test (the services' default, database.max_connections).
POOL = 10
# (connections, requests in flight): one client multiplexing, and many clients.
SHAPES = [(1, 8), (50, 200)]
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIN = Path(os.environ.get("STACK_BIN_DIR", ROOT / "target" / "release"))
GHZ = os.environ.get("GHZ", "ghz")
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

    def __init__(self, name, binary, env, workdir):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "w")
        path = BIN / binary
        if not path.is_file():
            sys.exit(f"bench: {path} not found: build the release binaries (`make release`)")
        self.process = subprocess.Popen(
            [str(path)], env={**os.environ, **BENCH_ENV, **env}, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        self.started = time.monotonic()
        self.address = self._wait_for_address()
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
                address = record.get("address") or record.get("fields", {}).get("address")
                if address:
                    return address
            time.sleep(0.02)
        sys.exit(f"bench: {self.name} did not listen within 60 s; see {self.log_path}")

    def cpu_seconds(self):
        """utime + stime of the process (all its threads), in seconds."""
        return proc_cpu_seconds(self.process.pid)

    def peak_rss_kib(self):
        """VmHWM: the most resident memory the process has had, in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return None

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
    """CPU of the PostgreSQL server and its backends (children of the postmaster)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(entry.name) == postmaster or int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            continue
    return total


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True, stdout=subprocess.DEVNULL)


def percentile(sorted_values, share):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(share * len(sorted_values)) - 1))
    return sorted_values[index]


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
    return {
        "count": report["count"],
        "rps": report["rps"],
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "p999_ms": percentile(latencies, 0.999),
        "statuses": statuses,
    }


def measure(case, shape, servers, postmaster, workdir):
    """Warm-up, then ROUNDS measured rounds; each round also reads server and database CPU."""
    ghz(case, shape, WARMUP, workdir)
    rounds = []
    for _ in range(ROUNDS):
        before = [s.cpu_seconds() for s in servers]
        db_before = postgres_cpu_seconds(postmaster)
        result = ghz(case, shape, DURATION, workdir)
        after = [s.cpu_seconds() for s in servers]
        db_after = postgres_cpu_seconds(postmaster)
        calls = max(result["count"], 1)
        result["server_cpu_us_per_call"] = (sum(after) - sum(before)) * 1e6 / calls
        result["db_cpu_us_per_call"] = (db_after - db_before) * 1e6 / calls
        rounds.append(result)
    median = lambda key: statistics.median(r[key] for r in rounds if r[key] is not None) if any(
        r[key] is not None for r in rounds) else None
    statuses = {}
    for r in rounds:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    return {
        "case": case["name"],
        "shape": f"{shape[0]} x {shape[1]}",
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
        f"load average {m['load_average_at_start']:.1f} at start; {m['postgres']}; commit {m['commit']}.",
        f"ghz and the servers share the machine. {run['rounds']} round(s) of {run['duration_s']} s after a "
        f"{run['warmup_s']} s warm-up, medians; latency in ms; CPU in microseconds per call "
        "(utime+stime from /proc of the server processes / of PostgreSQL).",
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
    for ratio in run["ratios"]:
        lines.append(f"- {ratio}")
    lines.append(
        "- Statuses: Unavailable up to the number in flight per round is consistent with ghz cutting "
        "calls off when a round's time is up (not checked call by call)."
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


def ratios(results):
    by = {(r["case"], r["shape"]): r for r in results}
    notes = []
    for shape in {r["shape"] for r in results}:
        full, bare = by.get(("GetUser", shape)), by.get(("GetUser, bare tonic", shape))
        if full and bare and bare["server_cpu_us_per_call"] and bare["rps"]:
            notes.append(
                f"Middleware stack at {shape}: GetUser costs {full['server_cpu_us_per_call'] / bare['server_cpu_us_per_call']:.2f}x "
                f"the bare-tonic CPU per call, at {full['rps'] / bare['rps']:.2f}x its throughput."
            )
        health = by.get(("Health Check", shape))
        if full and health and full["server_cpu_us_per_call"] is not None:
            notes.append(
                f"Database part of GetUser at {shape}: {full['server_cpu_us_per_call'] - health['server_cpu_us_per_call']:.0f} us "
                "of server CPU per call (GetUser minus Health Check)."
            )
    return sorted(notes)


def main():
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        sys.exit("bench: TEST_DATABASE_URL is unset: run through scripts/bench.sh")
    if not shutil.which(GHZ):
        sys.exit(f"bench: ghz not found at {GHZ}: run through scripts/bench.sh")
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
    try:
        pool = str(POOL)
        servers["users"] = Server("users", "users", {
            "USERS_SERVER__PORT": "0", "USERS_ADMIN__PORT": "0",
            "USERS_DATABASE__URL": users_url, "USERS_DATABASE__MAX_CONNECTIONS": pool,
        }, workdir)
        log(f"seeding {SEEDED} users")
        psql(users_url,
             f"INSERT INTO users (id, email, name, created_at) SELECT '{ID_PREFIX}' || lpad(i::text, 12, '0'), "
             f"'user' || i || '@bench.example', 'User ' || i, 0 FROM generate_series(0, {SEEDED - 1}) AS i; ANALYZE users")
        servers["bare_users"] = Server("bare_users", "bare_users", {
            "BARE_USERS_DATABASE_URL": users_url, "BARE_USERS_MAX_CONNECTIONS": pool,
        }, workdir)
        servers["orders"] = Server("orders", "orders", {
            "ORDERS_SERVER__PORT": "0", "ORDERS_ADMIN__PORT": "0",
            "ORDERS_DATABASE__URL": orders_url, "ORDERS_DATABASE__MAX_CONNECTIONS": pool,
            "ORDERS_USERS__ENDPOINTS": f"[http://{servers['users'].address}]",
        }, workdir)
        health = workdir / "health.proto"
        health.write_text(HEALTH_PROTO)
        cases = [
            {"name": "Health Check", "servers": ["users"], "call": "grpc.health.v1.Health/Check",
             "data": '{"service": ""}', "proto": health, "target": lambda: servers["users"].address},
            {"name": "GetUser", "servers": ["users"], "call": "users.v1.UserService/GetUser",
             "data": GET_USER_DATA, "proto": PROTO / "users/v1/users.proto", "target": lambda: servers["users"].address},
            {"name": "GetUser, bare tonic", "servers": ["bare_users"], "call": "users.v1.UserService/GetUser",
             "data": GET_USER_DATA, "proto": PROTO / "users/v1/users.proto", "target": lambda: servers["bare_users"].address},
            {"name": "CreateOrder (orders -> users)", "servers": ["orders", "users"],
             "call": "orders.v1.OrderService/CreateOrder", "data": CREATE_ORDER_DATA,
             "proto": PROTO / "orders/v1/orders.proto", "target": lambda: servers["orders"].address},
        ]
        wanted = os.environ.get("BENCH_CASES")
        if wanted:
            cases = [c for c in cases if c["name"] in wanted.split(",")]
        results = []
        for case in cases:
            for shape in SHAPES:
                log(f"{case['name']} at {shape[0]} x {shape[1]}")
                results.append(measure(case, shape, [servers[n] for n in case["servers"]], postmaster, workdir))
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
        "ratios": ratios(results),
        "start_ms": start_ms,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y-%m-%dT%H%MZ") + ("-quick" if QUICK else "")
    (out / f"{stem}.json").write_text(json.dumps(run, indent=2) + "\n")
    table = markdown(run)
    (out / f"{stem}.md").write_text(table)
    shutil.rmtree(workdir, ignore_errors=True)
    print(table)
    log(f"wrote bench/results/{stem}.md and .json")


if __name__ == "__main__":
    main()
