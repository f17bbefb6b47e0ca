"""Throughput and latency of the apnea model served over HTTP and on Ray, in one run.

    nice python bench/serve.py [--windows-per-client 2] [--backend seal] [--arch v2] [--json out.json]

Trains a small apnea detector on synthetic ECG, compiles and saves the program, makes one client
key set (real SEAL keys by default), then measures:

* the HTTP server (``privkit.deploy.http``, real HTTP on 127.0.0.1) with 1 and 2 worker
  processes, each with 1, 2, 4 and 8 concurrent clients (each client posts
  ``--windows-per-client`` windows one request at a time): windows/s and p50/p95 latency per
  request (one window);
* ``ray_infer`` on a local Ray cluster (2 CPUs; or the cluster at ``--ray-address``) with 1 and
  2 actors (actor start included);
* ``privkit serve --ray``: the same HTTP server with a :class:`~privkit.deploy.ray.RayPool` of 1
  and 2 actors on that cluster, after a warm-up (steady state);
* the memory one registered bundle costs a worker (RSS after loading it minus before).

Prints the load average alongside: the machine is shared, so ratios are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def http_round(url: str, client, kid: str, windows: np.ndarray, clients: int, per_client: int) -> dict:
    from privkit.deploy.remote import HTTPClient

    lat: list[float] = []
    lock = threading.Lock()
    cts = [client.encrypt(windows[i % len(windows)]) for i in range(clients * per_client)]

    def run(j: int) -> None:
        with HTTPClient(url) as h:
            for i in range(per_client):
                t = time.perf_counter()
                h.infer(kid, cts[j * per_client + i])
                with lock:
                    lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=run, args=(j,)) for j in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "windows": len(cts), "windows_per_s": len(cts) / wall,
            "p50_s": statistics.median(lat), "p95_s": _pct(lat, 0.95)}


def http_rounds(results: dict, label: str, app, n_workers: int, args, client, bundle: bytes,
                windows: np.ndarray) -> None:
    """Serve ``app`` on 127.0.0.1, warm every worker, then one round per client count."""
    import psutil

    from privkit.deploy.http import start_server
    from privkit.deploy.remote import HTTPClient

    server, thread, port = start_server(app)
    url = f"http://127.0.0.1:{port}"
    pool = app.state.pool
    pids = pool.pids() if hasattr(pool, "pids") else []
    rss0 = [psutil.Process(p).memory_info().rss for p in pids]
    with HTTPClient(url) as h:
        kid = h.register(bundle)
        for _ in range(2 * n_workers):  # warm: every worker loads the bundle once
            h.infer(kid, client.encrypt(windows[0]))
    rss1 = [psutil.Process(p).memory_info().rss for p in pids]
    per_bundle = float(np.mean([b - a for a, b in zip(rss0, rss1)])) if pids else float("nan")
    for c in [int(v) for v in args.clients.split(",")]:
        r = http_round(url, client, kid, windows, c, args.windows_per_client)
        r.update(workers=n_workers, bundle_rss_mib=per_bundle / 2**20, loadavg=os.getloadavg()[0])
        results[label].append(r)
        print(f"{label} workers={n_workers} clients={c}: {r['windows_per_s']:.2f} windows/s, "
              f"p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s (load {r['loadavg']:.1f})",
              file=sys.stderr)
    server.should_exit = True
    thread.join(30)
    pool.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows-per-client", type=int, default=2)
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-http", action="store_true", help="skip the local worker-process rounds")
    ap.add_argument("--arch", default="v2", choices=["v1", "v2"])
    ap.add_argument("--ray-address", default=None,
                    help="join this Ray cluster (e.g. 127.0.0.1:6379 after `ray start --head`) "
                         "instead of starting a local one")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from privkit.apps.apnea import ApneaDetector
    from privkit.data.ecg import synthetic_ecg
    from privkit.deploy import Client
    from privkit.deploy.http import create_app

    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="privkit-bench-serve-"))
    data = synthetic_ecg(64, seed=0)
    det = ApneaDetector(arch=args.arch, epochs=1, finetune_epochs=0, restarts=1, seed=0).fit(data, progress=False)
    program = det.compile()
    program.save(work / "apnea.pkprog")
    windows = synthetic_ecg(16, seed=5).x.astype(np.float64)
    client = Client(program.client_spec())
    t = time.perf_counter()
    client.keygen(backend=args.backend)
    keygen_s = time.perf_counter() - t
    bundle = client.bundle_envelope()
    results: dict = {"command": " ".join(["python"] + sys.argv), "backend": args.backend,
                     "params": program.params.describe(), "cpus": os.cpu_count(),
                     "keygen_s": keygen_s, "bundle_bytes": len(bundle), "http": [], "ray": [],
                     "http_ray": []}
    print(f"apnea program: {program}; bundle {len(bundle) / 2**20:.1f} MiB; load average {load0}",
          file=sys.stderr)
    for n_workers in [] if args.no_http else [int(v) for v in args.workers.split(",")]:
        app = create_app(work / "apnea.pkprog", work / "keys", workers=n_workers, max_queue=256,
                         allow_insecure=args.backend == "sim")
        http_rounds(results, "http", app, n_workers, args, client, bundle, windows)
    if not args.no_ray:
        import ray

        from privkit.deploy import ray_infer

        if args.ray_address:
            ray.init(address=args.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        results["ray_cluster"] = {"address": args.ray_address or "local", "nodes": len(nodes),
                                  "cpus": sum(n["Resources"].get("CPU", 0) for n in nodes)}
        print(f"ray cluster: {results['ray_cluster']}", file=sys.stderr)
        n = 8
        cts = [client.encrypt(windows[i % len(windows)]) for i in range(n)]
        for w in (1, 2):
            t = time.perf_counter()
            ray_infer(program, bundle, cts, workers=w, allow_insecure=args.backend == "sim")
            wall = time.perf_counter() - t
            r = {"workers": w, "windows": n, "windows_per_s": n / wall, "wall_s": wall,
                 "loadavg": os.getloadavg()[0], "note": "includes each actor loading program + bundle"}
            results["ray"].append(r)
            print(f"ray workers={w}: {r['windows_per_s']:.2f} windows/s ({wall:.1f} s for {n}, "
                  f"actor start included; load {r['loadavg']:.1f})", file=sys.stderr)
        # privkit serve --ray: the same HTTP server with its work on Ray actors (steady state:
        # the actors are started and have decoded the bundle before the timed rounds)
        from privkit.deploy.ray import RayPool

        for w in (1, 2):
            pool = RayPool(str(work / "apnea.pkprog"), str(work / "keys"), workers=w,
                           allow_insecure=args.backend == "sim")
            app = create_app(work / "apnea.pkprog", work / "keys", pool=pool, max_queue=256,
                             allow_insecure=args.backend == "sim")
            http_rounds(results, "http_ray", app, w, args, client, bundle, windows)
        ray.shutdown()
    for label in ("http", "http_ray"):
        best = {w: max(r["windows_per_s"] for r in results[label] if r["workers"] == w)
                for w in {r["workers"] for r in results[label]}}
        if 1 in best and 2 in best:
            results[f"{label}_speedup_2_vs_1"] = best[2] / best[1]
            print(f"{label}: best 2-worker / best 1-worker throughput = {best[2] / best[1]:.2f}x",
                  file=sys.stderr)
    results["loadavg_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
