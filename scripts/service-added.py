"""CreateOrder's service-added latency (issue 9): orders' server span minus the time of its
child spans (the call to users and the database statements), per call, from the traces
Jaeger stores. Not part of `make bench` (it needs Jaeger, which `make test` installs).

Usage, after `make bench` (or `cargo build --profile production --bin users --bin orders`) and
`scripts/install-tools.sh`:
    scripts/with-postgres.sh python3 scripts/service-added.py [IN_FLIGHT]   # default 1
SA_USERS / SA_ORDERS name other binaries than STACK_BIN_DIR's (default target/production). Prints p50/p90 in us of the
server span, the users call, the database spans and what is left: the service-added time.
The exporter is on for this run, so its cost is in the figures.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# The bench's helpers: starting one of our binaries, psql, seeding, percentiles.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CREATE_ORDER_DATA, ROOT, Server, percentile, psql, seed_users  # noqa: E402

GHZ = next((ROOT / ".tools").glob("ghz-*/ghz"), None)
JAEGER = ROOT / ".tools" / "bin" / "jaeger"
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


def start(name, env, workdir):
    """Starts our binary `name` (or the one SA_<NAME> names) and waits until it listens."""
    override = os.environ.get(f"SA_{name.upper()}")
    return Server(name, [override] if override else name, env, workdir)


def main():
    base = os.environ.get("TEST_DATABASE_URL") or sys.exit("run through scripts/with-postgres.sh")
    if GHZ is None or not JAEGER.exists():
        sys.exit("service-added: needs ghz (make bench) and jaeger (scripts/install-tools.sh) under .tools/")
    in_flight = sys.argv[1] if len(sys.argv) > 1 else "1"
    workdir = Path(tempfile.mkdtemp(prefix="service-added-"))
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
    users = start("users", {
        "USERS_SERVER__PORT": "0", "USERS_ADMIN__PORT": "0",
        "USERS_DATABASE__URL": f"{base}/users_sa", "USERS_TELEMETRY__OTLP_ENDPOINT": endpoint}, workdir)
    seed_users(f"{base}/users_sa")
    orders = start("orders", {
        "ORDERS_SERVER__PORT": "0", "ORDERS_ADMIN__PORT": "0",
        "ORDERS_DATABASE__URL": f"{base}/orders_sa", "ORDERS_USERS__ENDPOINTS": f"[http://{users.address}]",
        "ORDERS_TELEMETRY__OTLP_ENDPOINT": endpoint}, workdir)
    ghz = [str(GHZ), "--insecure", "--call", "orders.v1.OrderService/CreateOrder", "--data", CREATE_ORDER_DATA,
           "--import-paths", str(ROOT / "proto"), "--proto", str(ROOT / "proto/orders/v1/orders.proto"),
           "--connections", "1", "--concurrency", in_flight]
    subprocess.run([*ghz, "--duration", "1s", orders.address], stdout=subprocess.DEVNULL, check=True)
    measured_from = time.time()
    subprocess.run([*ghz, "--duration", "3s", orders.address], stdout=subprocess.DEVNULL, check=True)
    # Stopping flushes the spans; each export returns once Jaeger stored them.
    for server in (orders, users):
        server.stop()
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
    row = lambda name, values: f"{name} {percentile(sorted(values), .5)}/{percentile(sorted(values), .9)}"
    print(f"CreateOrder at 1 x {in_flight}, {len(added)} traces, us p50/p90: " + ", ".join([
        row("server span", server), row("users call", users_time), row("database spans", database),
        row("service-added", added)]))


if __name__ == "__main__":
    main()
