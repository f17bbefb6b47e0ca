"""The CLI and the examples run end to end in their --smoke modes (tiny sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_privkit_demo_prints_errors_and_latencies(tmp_path):
    r = run([sys.executable, "-m", "privkit.cli", "demo", "--backend", "seal", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ops = {row["operation"]: row for row in out["results"]}
    assert {"add", "multiply plain", "rotate by 5", "sum slots", "multiply ciphertexts"} <= set(ops)
    assert all(row["max_abs_error"] < 1e-4 for row in out["results"])
    assert "encrypted" in out["setup"] and "128-bit" in out["setup"]


def test_apnea_demo_smoke(tmp_path):
    png = tmp_path / "demo.png"
    r = run([sys.executable, "-m", "privkit.cli", "apnea", "demo", "--smoke", "--backend", "sim",
             "--png", str(png), "--json"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["encrypted"]["agreement"] == 1.0
    # the simulator is exact to ~1e-9; the plaintext logits it is compared with come from the
    # float32 model (v2: three quadratics), whose own rounding reaches ~1e-6
    assert out["encrypted"]["max_logit_error"] < 1e-5
    assert "SIMULATED" in out["encrypted"]["backend"]
    assert len(out["layers"]) >= 5 and png.stat().st_size > 10_000


# apnea train -> infer -> evaluate (--smoke, --json) run in-process in tests/test_cli.py


def test_apnea_client_server_example(tmp_path):
    r = run([sys.executable, str(ROOT / "examples" / "apnea_client_server.py"), "--smoke", "--backend", "sim",
             "--workdir", str(tmp_path / "work")], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "matches plaintext" in r.stdout
    files = sorted(p.name for p in (tmp_path / "work").iterdir())
    assert {"bundle.env", "input.env", "result.env", "model.privkit"} <= set(files)


@pytest.mark.slow
def test_apnea_client_server_example_real_encryption(tmp_path):
    r = run([sys.executable, str(ROOT / "examples" / "apnea_client_server.py"), "--smoke",
             "--workdir", str(tmp_path / "work")], tmp_path, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "matches plaintext" in r.stdout


def test_box_conv_digits_example_smoke(tmp_path):
    r = run([sys.executable, str(ROOT / "examples" / "box_conv_digits.py"), "--smoke"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "%" in r.stdout  # the accuracy table


def test_dp_svae_example_smoke(tmp_path):
    r = run([sys.executable, str(ROOT / "examples" / "dp_svae.py"), "--smoke"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "epsilon" in (r.stdout + r.stderr).lower()


@pytest.mark.parametrize("example", ["tenseal_tutorial_cnn", "box_lenet", "box_cnn3d"])
def test_image_cnn_examples_smoke(example, tmp_path):
    """Each exits non-zero unless the encrypted (simulated) classes agree with the plaintext model."""
    r = run([sys.executable, str(ROOT / "examples" / f"{example}.py"), "--smoke"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "SIMULATED" in r.stdout and "100" in r.stdout
