"""The HTTP inference server over real HTTP on 127.0.0.1: concurrent clients, typed 4xx, 503,
a worker killed mid-request, and the ``privkit client`` CLI."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra (fastapi, uvicorn, httpx) is not installed")
pytest.importorskip("uvicorn", reason="the 'serve' extra is not installed")
pytest.importorskip("httpx", reason="the 'serve' extra is not installed")

from deploy_models import small_program  # noqa: E402
from privkit.deploy import Client, Server  # noqa: E402
from privkit.deploy.http import create_app, start_server  # noqa: E402
from privkit.deploy.remote import HTTPClient  # noqa: E402
from privkit.errors import RemoteError  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    prog = small_program()
    prog.save(d / "model.pkprog")
    app = create_app(d / "model.pkprog", d / "keys", workers=2, max_queue=6,
                     max_request_bytes=4 << 20, allow_insecure=True)
    server, thread, port = start_server(app)
    yield {"url": f"http://127.0.0.1:{port}", "app": app, "program": prog, "dir": d}
    server.should_exit = True
    thread.join(10)
    app.state.pool.close()


def _expected(prog, client, xs):
    """The in-process answer for the same inputs and keys."""
    s = Server(prog, allow_insecure=True)
    s.register(client.bundle_envelope())
    return client.decrypt(s.infer(client.encrypt_batch(list(xs))))


def test_concurrent_clients_get_their_own_answers(served):
    prog = served["program"]
    errors: list[BaseException] = []

    def one_client(i: int) -> None:
        try:
            with HTTPClient(served["url"]) as http:
                client = Client(http.model())
                client.keygen(backend="sim")
                kid = http.register(client.bundle_envelope())
                rng = np.random.default_rng(100 + i)
                for _ in range(3):  # bounded request loop
                    xs = rng.normal(size=(2, 16))
                    got = client.decrypt(http.infer(kid, client.encrypt_batch(list(xs))))
                    assert np.array_equal(got, _expected(prog, client, xs))
        except BaseException as e:  # collected: asserted in the main thread
            errors.append(e)

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert HTTPClient(served["url"]).health()["status"] == "ok"


def test_typed_errors_over_http(served):
    http = HTTPClient(served["url"], retries=0)
    client = Client(http.model())
    keys = client.keygen(backend="sim")
    kid = http.register(client.bundle_envelope())

    def status(fn):
        with pytest.raises(RemoteError) as ei:
            fn()
        return ei.value.status, ei.value.error

    assert status(lambda: http.infer(kid, b"not an envelope")) == (400, "EnvelopeError")
    bad = bytearray(client.encrypt(np.zeros(16)))
    bad[-50] ^= 1
    assert status(lambda: http.infer(kid, bytes(bad))) == (400, "EnvelopeError")
    assert status(lambda: http.register(b"\x89PKKEY\r\n" + b"\0" * 64)) == (400, "SecretKeyExposureError")
    other = Client(client.spec)
    other.keygen(backend="sim")
    k2 = http.register(other.bundle_envelope())
    assert status(lambda: http.infer(k2, client.encrypt(np.zeros(16)))) == (409, "KeyMismatchError")
    stranger = Client(client.spec)
    stranger.keygen(backend="sim")
    assert status(lambda: http.infer(stranger.key_id, stranger.encrypt(np.zeros(16)))) == (404, "MissingKeyError")
    assert status(lambda: http.infer(kid, b"\0" * (5 << 20)))[0] == 413
    from privkit.fhe import KeySet

    wrong = KeySet.generate("n8192", backend="sim", rotations=[1])
    assert status(lambda: http.register(wrong.public_bundle().to_envelope())) == (409, "KeyMismatchError")
    assert keys is client.keys


def test_queue_full_answers_503_with_retry_after(served):
    import httpx

    client = Client(HTTPClient(served["url"]).model())
    client.keygen(backend="sim")
    kid = HTTPClient(served["url"]).register(client.bundle_envelope())
    blob = client.encrypt_batch([np.zeros(16)] * 8)  # more inputs than the queue (6) can hold
    r = httpx.post(f"{served['url']}/infer/{kid}", content=blob)
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"] == "ServerBusyError"


def test_worker_killed_mid_request(served):
    pool = served["app"].state.pool
    prog = served["program"]
    clients = []
    with HTTPClient(served["url"]) as http:
        for _ in range(2):
            c = Client(http.model())
            c.keygen(backend="sim")
            clients.append((c, http.register(c.bundle_envelope())))
    results: dict[int, object] = {}
    xs = [np.full(16, 0.5), np.full(16, -0.25)]

    def call(i: int) -> None:
        c, kid = clients[i]
        try:
            with HTTPClient(served["url"], retries=0) as h:
                results[i] = c.decrypt(h.infer(kid, c.encrypt(xs[i])))
        except RemoteError as e:
            results[i] = e

    restarts = pool.restarts
    pool.delay_s = 1.5  # widen the window in which a request is being computed
    try:
        ts = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        t0 = time.monotonic()
        while len(pool.busy_pids()) < 2 and time.monotonic() - t0 < 20:
            time.sleep(0.01)
        victim = pool.busy_pids()[0]
        os.kill(victim, signal.SIGKILL)
        for t in ts:
            t.join(60)
    finally:
        pool.delay_s = 0.0
    crashed = [i for i, r in results.items() if isinstance(r, RemoteError)]
    assert len(crashed) == 1, results
    err = results[crashed[0]]
    assert err.status == 500 and err.error == "WorkerCrashedError" and "died" in str(err)
    ok = 1 - crashed[0]
    c, _ = clients[ok]
    assert np.array_equal(results[ok], _expected(prog, c, xs[ok][None])) # not lost, not mixed up
    # the server keeps serving, with a new worker in place of the killed one
    c, kid = clients[crashed[0]]
    with HTTPClient(served["url"]) as h:
        for _ in range(3):
            assert np.array_equal(c.decrypt(h.infer(kid, c.encrypt(xs[crashed[0]]))),
                                  _expected(prog, c, xs[crashed[0]][None]))
    assert pool.restarts == restarts + 1 and victim not in pool.pids()


def test_client_cli_flow(served, tmp_path, capsys):
    from privkit.cli import main

    keys = str(tmp_path / "c.keys")
    common = ["--keys", keys, "--insecure-plaintext"]
    assert main(["client", "keys", "--server", served["url"], "--out", keys, "--backend", "sim",
                 "--insecure-plaintext"]) == 0
    x = np.random.default_rng(3).normal(size=(2, 16))
    np.save(tmp_path / "x.npy", x)
    assert main(["client", "encrypt", *common, str(tmp_path / "x.npy"), "--out", str(tmp_path / "ct.env")]) == 0
    assert main(["client", "send", *common, "--server", served["url"], str(tmp_path / "ct.env"),
                 "--out", str(tmp_path / "res.env")]) == 0
    capsys.readouterr()
    assert main(["client", "decrypt", *common, str(tmp_path / "res.env"), "--json"]) == 0
    import json

    got = np.array(json.loads(capsys.readouterr().out)["logits"])
    c = Client(served["program"].client_spec())
    c.load_keys(keys, allow_plaintext=True)
    assert np.array_equal(got, _expected(served["program"], c, x))


@pytest.mark.slow
def test_apnea_serve_and_infer_server_cli(tmp_path):
    """``privkit apnea serve`` in a subprocess; ``privkit apnea infer --server`` as the client."""
    import json
    import socket
    import subprocess
    import sys

    from privkit.cli import main

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    cli = [sys.executable, "-m", "privkit.cli"]
    subprocess.run(cli + ["apnea", "train", "--smoke", "--out", str(tmp_path / "a.pt")], check=True,
                   env=env, cwd=root, capture_output=True, timeout=600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen(cli + ["apnea", "serve", "--model", str(tmp_path / "a.pt"), "--port", str(port),
                                  "--workers", "1", "--allow-insecure", "--key-dir", str(tmp_path / "keys")],
                           env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            try:
                HTTPClient(url, retries=0).health()
                break
            except Exception:
                time.sleep(0.5)
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["apnea", "infer", "--server", url, "--keys", str(tmp_path / "c.keys"),
                       "--insecure-plaintext", "--backend", "sim", "-n", "3", "--json"])
        assert rc == 0
        out = json.loads(buf.getvalue())
        from privkit.apps.apnea import ApneaDetector
        from privkit.data.ecg import synthetic_ecg

        det = ApneaDetector.load(tmp_path / "a.pt")
        plain = det.logits(synthetic_ecg(8, seed=0, effect=2.0).x[:3])  # what apnea infer loads
        assert np.abs(np.array(out["logits"]) - plain).max() < 1e-6
        assert sorted(os.listdir(tmp_path)) >= ["a.pkprog", "a.pt", "c.keys", "c.keys.spec"]
    finally:
        srv.terminate()
        srv.wait(30)
