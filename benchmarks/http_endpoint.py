"""HTTP endpoint under load: `recsys serve` latency per request size, and throughput with concurrent clients.

Self-contained: in a temporary RECSYS_HOME (nothing of the developer's ~/.recsys, settings or Redis is
used) it runs the real chain on the bundled sample (`recsys.pipelines.chain.run_all`, --epochs epochs,
promotion forced: speed does not depend on quality), starts `recsys serve` on a free 127.0.0.1 port
(--workers, default: the command's own), waits for /ping, warms up over --clients connections so
that every server worker gets requests of each kind, then times, all with k=--k:
- `1 user`: --requests sequential 1-user requests, random users with a stored list;
- `100 users`: --requests sequential requests of 100 distinct random users with a stored list each;
- `100 mixed`: 100-user requests of 80 users with a stored list, 10 with only a stored history (their
  lists are deleted from Redis at setup: scored on the spot, source `computed`) and 10 unknown ids
  (source `popular`); the main 100-user figure above holds stored lists only;
- `N clients x 1 user` / `N clients x 100 users`: --clients threads, each with its own keep-alive
  connection, sending --per-client requests each: requests/s, users/s and per-request latency.
Latency is measured by the client: from sending the request to having read the whole response. Every
response is checked afterwards (one row per user, in request order, the expected source).

    .venv/bin/python benchmarks/http.py --requests 300
Prints a table and writes benchmarks/results/http.json. The server and Redis are stopped at the end,
also on error. The machine is shared: the load average before and after each case is recorded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import PROJECT_ROOT, Settings, load_settings
from recsys.online.reader import USER_FIELDS, entity_key
from recsys.ops import redis_server
from recsys.pipelines import chain

RECSYS = str(Path(sys.executable).parent / "recsys")
HEADERS = {"Content-Type": "application/json"}
UNKNOWN_BASE = 10_000_000  # user ids from here on are unknown to the sample
HISTORY_ONLY = 50  # users whose stored list is deleted at setup (source `computed`)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body(user_ids: list[int], k: int) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": ["user_id", "k"], "data": [[int(u), k] for u in user_ids]}}
    ).encode()


class Client:
    """One keep-alive HTTP/1.1 connection to the endpoint."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, payload: bytes) -> tuple[float, bytes]:
        """(seconds from sending to the whole body read, body); RuntimeError on a non-200 answer."""
        start = time.perf_counter()
        self.conn.request("POST", "/invocations", payload, HEADERS)
        response = self.conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:500]!r}")
        return elapsed, data

    def close(self) -> None:
        self.conn.close()


def check(data: bytes, user_ids: list[int], sources: list[str], k: int) -> None:
    """The response holds one row per user in request order, with the expected source and k triples."""
    rows = json.loads(data)["predictions"]
    got = [(r["user_id"], r["source"], len(r["recommendations"])) for r in rows]
    want = [(u, s, k) for u, s in zip(user_ids, sources)]
    if got != want:
        bad = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w) if len(got) == len(want) else 0
        raise RuntimeError(
            f"unexpected response row {bad}: got {got[bad : bad + 1]}, want {want[bad : bad + 1]}"
        )


def summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "n": len(ms),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def sequential(port: int, requests: list[tuple[list[int], list[str]]], k: int) -> dict[str, float]:
    client = Client(port)
    try:
        timed = [client.post(body(users, k)) for users, _ in requests]
    finally:
        client.close()
    for (users, sources), (_, data) in zip(requests, timed):
        check(data, users, sources, k)
    return summary([t for t, _ in timed])


def concurrent(port: int, requests: list[list[tuple[list[int], list[str]]]], k: int) -> dict[str, float]:
    """One thread per client list, started together; each sends its requests back to back."""
    payloads = [[body(users, k) for users, _ in mine] for mine in requests]
    results: list[list[tuple[float, bytes]]] = [[] for _ in requests]
    errors: list[BaseException] = []
    start_line = threading.Barrier(len(requests) + 1)

    def work(i: int) -> None:
        client = Client(port)
        try:
            client.post(payloads[i][0])  # open the connection before the clock starts
            start_line.wait()
            results[i] = [client.post(p) for p in payloads[i]]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            start_line.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    try:
        start_line.wait()
    except threading.BrokenBarrierError:  # a client failed to connect: reported below
        pass
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}") from errors[0]
    for mine, timed in zip(requests, results):
        for (users, sources), (_, data) in zip(mine, timed):
            check(data, users, sources, k)
    n_requests = sum(len(mine) for mine in requests)
    n_users = sum(len(users) for mine in requests for users, _ in mine)
    return {
        **summary([t for timed in results for t, _ in timed]),
        "clients": len(requests),
        "wall_s": wall,
        "requests_per_s": n_requests / wall,
        "users_per_s": n_users / wall,
    }


def wait_for_server(port: int, proc: subprocess.Popen, log_path: Path, timeout_s: float = 300) -> float:
    """Seconds until /ping answers 200; RuntimeError with the log tail if the server exits first."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()[-3000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                return time.monotonic() - start
        except OSError:
            time.sleep(0.5)
        finally:
            conn.close()
    raise RuntimeError(f"server did not answer /ping in {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@contextmanager
def serve(env: dict[str, str], port: int, workers: int | None, log_path: Path) -> Iterator[subprocess.Popen]:
    """`recsys serve` in its own process group, logs to ``log_path``; always stopped afterwards."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECSYS", "MLFLOW")) and k != "REDIS_CONNECTION_STRING"
    }
    command = [RECSYS, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            command, env={**clean, **env}, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_server(proc)


def chain_settings(tmp: Path, epochs: int) -> tuple[Settings, dict[str, str]]:
    """Settings, and the environment that gives `recsys serve` the same ones, of a home under ``tmp``."""
    repo = tmp / "feature_repo"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    env = {
        "RECSYS_HOME": str(tmp / "home"),
        "RECSYS__STORE__PORT": str(free_port()),
        "RECSYS__PATHS__FEATURE_REPO": str(repo),
    }
    settings = load_settings([f"train.max_epochs={epochs}", "train.progress_bar=false"], env=env)
    return settings, env


def publish_lists(settings: Settings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Run the chain, then delete HISTORY_ONLY random users' lists; (users with a list, the others)."""
    steps = chain.run_all(settings, force_promotion=True)
    print(f"chain done (version {steps['train']['version']})", file=sys.stderr)
    users = pd.read_parquet(steps["score"]["recommendations"], columns=["user_id"])["user_id"].to_numpy()
    history_only = rng.choice(users, size=HISTORY_ONLY, replace=False)
    conn = redis_server.client(settings.redis_connection)
    for user_id in history_only.tolist():
        conn.hdel(entity_key("user_id", user_id), *USER_FIELDS)
    return np.setdiff1d(users, history_only), history_only


def plan(
    rng: np.random.Generator, stored: np.ndarray, history_only: np.ndarray, args: argparse.Namespace
) -> dict[str, list]:
    """The users of every request of every case (drawn before any timing)."""

    def users(n: int) -> tuple[list[int], list[str]]:
        picked = rng.choice(stored, size=n, replace=False).tolist()
        return picked, ["online_store"] * n

    def mixed() -> tuple[list[int], list[str]]:
        rows = (
            [(u, "online_store") for u in rng.choice(stored, 80, replace=False).tolist()]
            + [(u, "computed") for u in rng.choice(history_only, 10, replace=False).tolist()]
            + [(UNKNOWN_BASE + int(u), "popular") for u in rng.choice(10**6, 10, replace=False)]
        )
        order = rng.permutation(len(rows))
        return [rows[i][0] for i in order], [rows[i][1] for i in order]

    n, c, per = args.requests, args.clients, args.per_client
    warmup = [users(1) for _ in range(args.warmup)] + [users(100) for _ in range(args.warmup)]
    return {
        "warmup": [[*warmup, *(mixed() for _ in range(10))] for _ in range(c)],
        "1 user": [users(1) for _ in range(n)],
        "100 users": [users(100) for _ in range(n)],
        "100 mixed": [mixed() for _ in range(n)],
        f"{c} clients x 1 user": [[users(1) for _ in range(per)] for _ in range(c)],
        f"{c} clients x 100 users": [[users(100) for _ in range(per)] for _ in range(c)],
    }


def run_cases(port: int, cases: dict[str, list], k: int) -> dict[str, dict]:
    concurrent(port, cases.pop("warmup"), k)  # several connections: every server worker gets some
    results = {}
    for name, requests in cases.items():
        load_before = os.getloadavg()[0]
        run = concurrent if "clients" in name else sequential
        results[name] = {
            **run(port, requests, k),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        }
        print(
            f"  {name}: p50 {results[name]['p50_ms']:.2f} ms, p99 {results[name]['p99_ms']:.2f} ms",
            file=sys.stderr,
            flush=True,
        )
    return results


def table(results: dict[str, dict]) -> str:
    cols = ["p50 ms", "p90 ms", "p99 ms", "max ms", "req/s"]
    lines = [f"{'case':24s} {'n':>5s} " + " ".join(f"{c:>8s}" for c in cols) + f" {'users/s':>9s}"]
    for name, r in results.items():
        rate = (
            f"{r['requests_per_s']:8.0f} {r['users_per_s']:9.0f}"
            if "requests_per_s" in r
            else f"{1e3 / r['mean_ms']:8.0f} {'':9s}"
        )
        lines.append(
            f"{name:24s} {r['n']:5d} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['max_ms']:8.2f} {rate}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per case")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (threads)")
    parser.add_argument("--per-client", type=int, default=100, help="requests per concurrent client")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up requests of each size, per client")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2, help="train.max_epochs of the chain")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="passed to `recsys serve --workers` (default: the command's own)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "http.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="recsys-http-") as name:
        tmp = Path(name)
        settings, env = chain_settings(tmp, args.epochs)
        with redis_server.running(settings):
            start = time.monotonic()
            stored, history_only = publish_lists(settings, rng)
            chain_s = time.monotonic() - start
            cases = plan(rng, stored, history_only, args)
            port = free_port()
            with serve(env, port, args.workers, tmp / "serve.log") as proc:
                start_s = wait_for_server(port, proc, tmp / "serve.log")
                print(f"server answers /ping after {start_s:.1f} s", file=sys.stderr)
                results = run_cases(port, cases, args.k)
            log_lines = (tmp / "serve.log").read_text().splitlines()
            banner = next((line for line in log_lines if line.startswith("serving ")), "")
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=PROJECT_ROOT
    ).stdout.strip()
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "commit": commit,
        "cpu_count": os.cpu_count(),
        "server": banner,
        "chain_s": chain_s,
        "server_start_s": start_s,
        "users_with_list": len(stored),
        "users_history_only": HISTORY_ONLY,
        "cases": results,
    }
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
