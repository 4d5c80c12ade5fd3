"""CreateOrder's service-added latency (issue 9): orders' server span minus the time of its
child spans (the call to users and the database statements), per call, from the traces
Jaeger stores. Not part of `make bench` (it needs Jaeger, which `make test` installs).

Usage, after `make release` and `scripts/install-tools.sh`:
    scripts/with-postgres.sh python3 scripts/service-added.py [IN_FLIGHT]   # default 1
SA_USERS / SA_ORDERS name other binaries than target/release's. Prints p50/p90 in us of the
server span, the users call, the database spans and what is left: the service-added time.
The exporter is on for this run, so its cost is in the figures.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("STACK_BIN_DIR", ROOT / "target" / "release"))
GHZ = next((ROOT / ".tools").glob("ghz-*/ghz"), None)
JAEGER = ROOT / ".tools" / "bin" / "jaeger"
CREATE_ORDER = '{"customer_email": "user{{randomInt 0 10000}}@bench.example", "total_cents": 1999, "currency": "EUR"}'
JAEGER_CONFIG = """service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger_storage_exporter]}}
  telemetry: {{metrics: {{level: none}}}}
extensions:
  jaeger_storage: {{backends: {{memstore: {{memory: {{max_traces: 100000}}}}}}}}
  jaeger_query:
    storage: {{traces: memstore}}
    http: {{endpoint: "127.0.0.1:{query}"}}
    grpc: {{endpoint: "127.0.0.1:{query_grpc}"}}
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{otlp}"}}}}}}
exporters:
  jaeger_storage_exporter: {{trace_storage: memstore}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(url, sql):
    subprocess.run(["psql", "-q", url, "-c", sql], check=True)


def start(name, env, workdir):
    """Starts a release binary; returns the process and its gRPC address."""
    log = workdir / f"{name}.log"
    command = [os.environ.get(f"SA_{name.upper()}", str(BIN / name))]
    process = subprocess.Popen(command, env={**os.environ, "RUST_LOG": "info", **env},
                               stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            address = {**record, **record.get("fields", {})}.get("address")
            if address:
                return process, address
        time.sleep(0.02)
    sys.exit(f"service-added: {name} did not listen; see {log}")


def percentile(values, share):
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


def main():
    base = os.environ.get("TEST_DATABASE_URL") or sys.exit("run through scripts/with-postgres.sh")
    if GHZ is None or not JAEGER.exists():
        sys.exit("service-added: needs ghz (make bench) and jaeger (scripts/install-tools.sh) under .tools/")
    in_flight = sys.argv[1] if len(sys.argv) > 1 else "1"
    workdir = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip())
    psql(f"{base}/postgres", "CREATE DATABASE users_sa")
    psql(f"{base}/postgres", "CREATE DATABASE orders_sa")
    otlp, query = free_port(), free_port()
    (workdir / "jaeger.yaml").write_text(JAEGER_CONFIG.format(otlp=otlp, query=query, query_grpc=free_port()))
    jaeger = subprocess.Popen([str(JAEGER), "--config", str(workdir / "jaeger.yaml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in jaeger.stderr:
        if "Everything is ready" in line:
            break
    endpoint = f"http://127.0.0.1:{otlp}"
    users, users_address = start("users", {
        "USERS_AUTH__MODE": "none", "USERS_SERVER__PORT": "0", "USERS_ADMIN__PORT": "0",
        "USERS_DATABASE__URL": f"{base}/users_sa", "USERS_TELEMETRY__OTLP_ENDPOINT": endpoint}, workdir)
    psql(f"{base}/users_sa", "INSERT INTO users (id, email, name, created_at) SELECT '00000000-0000-4000-8000-' || "
         "lpad(i::text, 12, '0'), 'user' || i || '@bench.example', 'User ' || i, 0 FROM generate_series(0, 9999) AS i")
    orders, orders_address = start("orders", {
        "ORDERS_AUTH__MODE": "none", "ORDERS_SERVER__PORT": "0", "ORDERS_ADMIN__PORT": "0",
        "ORDERS_DATABASE__URL": f"{base}/orders_sa", "ORDERS_USERS__ENDPOINTS": f"[http://{users_address}]",
        "ORDERS_TELEMETRY__OTLP_ENDPOINT": endpoint}, workdir)
    ghz = [str(GHZ), "--insecure", "--call", "orders.v1.OrderService/CreateOrder", "--data", CREATE_ORDER,
           "--import-paths", str(ROOT / "proto"), "--proto", str(ROOT / "proto/orders/v1/orders.proto"),
           "--connections", "1", "--concurrency", in_flight]
    subprocess.run([*ghz, "--duration", "1s", orders_address], stdout=subprocess.DEVNULL, check=True)
    measured_from = time.time()
    subprocess.run([*ghz, "--duration", "3s", orders_address], stdout=subprocess.DEVNULL, check=True)
    # Stopping flushes the spans; each export returns once Jaeger stored them.
    for process in (orders, users):
        process.terminate()
        process.wait()
    url = (f"http://127.0.0.1:{query}/api/traces?service=orders&operation=orders.v1.OrderService/CreateOrder"
           f"&limit=100000&start={int(measured_from * 1e6)}")
    traces = json.load(urllib.request.urlopen(url))["data"]
    jaeger.terminate()
    server, users_time, database, added = [], [], [], []
    for trace in traces:
        spans, processes = trace["spans"], trace["processes"]
        roots = [s for s in spans if processes[s["processID"]]["serviceName"] == "orders"
                 and s["operationName"] == "orders.v1.OrderService/CreateOrder"
                 and {"key": "span.kind", "type": "string", "value": "server"} in s["tags"]]
        if len(roots) != 1:
            continue
        root = roots[0]
        children = [s for s in spans if any(r["refType"] == "CHILD_OF" and r["spanID"] == root["spanID"]
                                            for r in s.get("references", []))]
        to_users = sum(s["duration"] for s in children if s["operationName"].startswith("users."))
        to_database = sum(s["duration"] for s in children if not s["operationName"].startswith("users."))
        server.append(root["duration"])
        users_time.append(to_users)
        database.append(to_database)
        added.append(root["duration"] - to_users - to_database)
    if not added:
        sys.exit(f"service-added: no CreateOrder server span among {len(traces)} traces")
    row = lambda name, values: f"{name} {percentile(values, .5)}/{percentile(values, .9)}"
    print(f"CreateOrder at 1 x {in_flight}, {len(added)} traces, us p50/p90: " + ", ".join([
        row("server span", server), row("users call", users_time), row("database spans", database),
        row("service-added", added)]))


if __name__ == "__main__":
    main()
