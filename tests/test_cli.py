"""The ``privkit`` command line as a new user meets it: fast help, --version, python -m privkit,
help for every option, --json that parses and --smoke under 30 s on every subcommand, marked
warnings for results that mean nothing, and errors that name the missing extra."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from privkit import __version__
from privkit.cli import build_parser, main
from privkit.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parents[1]
SMOKE_LIMIT_S = 30.0


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def _py(args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _walk(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _walk(sub, path + (name,))


def _leaves():
    return [p for p, q in _walk(build_parser()) if not any(
        isinstance(a, argparse._SubParsersAction) for a in q._actions)]


# -- start-up ----------------------------------------------------------------------------------
def test_help_is_fast_and_imports_no_heavy_module(tmp_path):
    code = ("import sys, time; t = time.perf_counter(); from privkit.cli import build_parser; "
            "build_parser().format_help(); dt = time.perf_counter() - t; "
            "heavy = sorted(m for m in ('torch', 'sklearn', 'tenseal', 'matplotlib', 'opacus', "
            "'scipy') if m in sys.modules); print(dt, ','.join(heavy))")
    r = _py(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr
    dt, heavy = r.stdout.split()[0], (r.stdout.split() + [""])[1]
    assert heavy == "", f"building the parser imported {heavy}"
    t = time.perf_counter()
    r = _py(["-m", "privkit", "--help"], tmp_path)
    wall = time.perf_counter() - t
    print(f"parser build {float(dt):.3f} s; 'python -m privkit --help' {wall:.2f} s wall")
    assert r.returncode == 0 and "apnea" in r.stdout and "anon" in r.stdout
    assert float(dt) < 1.0
    assert wall < 3.0  # interpreter start included; generous slack for a loaded CI machine


def test_version_and_python_m_privkit(tmp_path):
    r = _py(["-m", "privkit", "--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"privkit {__version__}"
    r = _py(["-m", "privkit"], tmp_path)
    assert r.returncode == 2 and "usage: privkit" in r.stdout


def test_every_option_has_help_and_help_is_plain_text():
    for path, p in _walk(build_parser()):
        text = p.format_help()
        assert "``" not in text and ":mod:" not in text and ":class:" not in text, path
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction,
                              argparse._SubParsersAction)):
                continue
            assert a.help, f"privkit {' '.join(path)} {a.option_strings or a.dest}: no help"
    demo = dict(_walk(build_parser()))[("apnea", "demo")].format_help()
    assert "(default: 1200)" in demo and "(default: seal)" in demo


def test_every_leaf_subcommand_has_json_and_compute_ones_have_smoke():
    leaves = _leaves()
    assert len(leaves) >= 14, leaves  # demo, apnea x4, svae x3, anon x3, keys x3
    for path in leaves:
        opts = {o for a in dict(_walk(build_parser()))[path]._actions for o in a.option_strings}
        assert "--json" in opts, path
        # key commands are fast without it (measured below); serving and client roles compute
        # nothing of their own (they are tested against a server in test_deploy_http.py)
        if path[0] not in ("keys", "serve", "client") and path != ("apnea", "serve"):
            assert "--smoke" in opts, path


# -- --smoke and --json on every subcommand (in-process: no interpreter start per command) ----
def _run_json(argv: list[str], capsys) -> tuple[dict, float, str]:
    t = time.perf_counter()
    rc = main(argv)
    dt = time.perf_counter() - t
    out = capsys.readouterr()
    assert rc == 0, (argv, out.err[-3000:])
    assert dt < SMOKE_LIMIT_S, f"privkit {' '.join(argv)} took {dt:.1f} s"
    sys.__stderr__.write(f"privkit {' '.join(argv[:2])}: {dt:.1f} s\n")
    return json.loads(out.out), dt, out.err


def test_demo_and_apnea_smoke_json(tmp_path, capsys):
    d, _, _ = _run_json(["demo", "--smoke", "--backend", "sim", "--json"], capsys)
    assert len(d["results"]) == 8 and "NOT encrypted" in d["setup"]
    model = str(tmp_path / "apnea.privkit")
    d, _, _ = _run_json(["apnea", "train", "--smoke", "--out", model, "--json"], capsys)
    assert set(d["held_out"]) >= {"accuracy", "sensitivity", "specificity", "warnings"}
    d, _, _ = _run_json(["apnea", "infer", "--smoke", "--model", model, "--backend", "sim",
                         "--json"], capsys)
    assert d["windows"] == 2 and d["agreement"] == 1.0 and "out_of_range" in d
    d, _, _ = _run_json(["apnea", "evaluate", "--smoke", "--model", model, "--encrypted", "2",
                         "--backend", "sim", "--json"], capsys)
    assert d["encrypted"]["windows"] == 2 and "accuracy" in d["plaintext"]


def test_apnea_train_holds_out_whole_subjects_and_v1_still_trains(tmp_path, capsys):
    import types

    from privkit.apps.apnea_cli import _split
    from privkit.data.ecg import synthetic_ecg

    data = synthetic_ecg(60, seed=3)
    train, test, by_subject = _split(data, 0.8, 0)
    assert by_subject and len(train.y) + len(test.y) == 60 and len(test.y) > 0
    assert not set(train.subject) & set(test.subject)  # no person on both sides
    plain = types.SimpleNamespace(x=data.x, y=data.y)  # no subject ids: a split of windows
    (xtr, ytr), (xte, yte), by_subject = _split(plain, 0.8, 0)
    assert not by_subject and len(ytr) == 48 and len(yte) == 12
    model = str(tmp_path / "v1.privkit")
    d, _, _ = _run_json(["apnea", "train", "--smoke", "--arch", "v1", "--out", model, "--json"], capsys)
    assert "accuracy" in d["held_out"]


def test_svae_smoke_json(tmp_path, capsys):
    model = str(tmp_path / "svae.privkit")
    d, _, err = _run_json(["svae", "train", "--smoke", "--dp", "--noise-multiplier", "1.0",
                           "--out", model, "--json"], capsys)
    assert 0 < d["epsilon"] < 10 and d["train_images"] == 120 and d["accountant"] == "rdp"
    d, _, _ = _run_json(["svae", "evaluate", "--smoke", "--model", model, "--json"], capsys)
    assert d["test_images"] == 60
    assert 0 < d["recon_mse_mean_image_baseline"] and d["recon_mse"] > 0
    d, _, _ = _run_json(["svae", "sample", "--smoke", "--model", model, "--json"], capsys)
    assert d["n"] == 8


def test_anon_smoke_json(tmp_path, capsys):
    model = str(tmp_path / "anon.privkit")
    d, _, _ = _run_json(["anon", "train", "--data", "synthetic", "--smoke", "--quiet",
                         "--out", model, "--json"], capsys)
    assert d["metrics"]["n_subjects"] == 4 and isinstance(d["warnings"], list)
    d, _, _ = _run_json(["anon", "apply", "--model", model, "--smoke",
                         "--out", str(tmp_path / "anon.env"), "--json"], capsys)
    assert d["windows"] == 32 and Path(d["out"]).is_file()
    d, _, _ = _run_json(["anon", "evaluate", "--model", model, "--smoke", "--json"], capsys)
    assert "reid_retrained_acc" in d["metrics"]


def test_keys_json(tmp_path, capsys, monkeypatch):
    from privkit.fhe import keyfile as kf

    @dataclasses.dataclass(frozen=True)
    class CheapScrypt(kf.ScryptKDF):
        n: int = 2**10

    monkeypatch.setattr(kf, "ScryptKDF", CheapScrypt)
    monkeypatch.setenv("PK_PW", "pw for a test")
    keys, pub = str(tmp_path / "c.keys"), str(tmp_path / "b.pkb")
    d, _, _ = _run_json(["keys", "generate", "--preset", "n8192", "--backend", "sim",
                         "--rotations", "1,2", "--password-env", "PK_PW", "--out", keys,
                         "--json"], capsys)
    assert d["rotation_keys"] == 2 and d["key_file"] == keys and len(d["fingerprint"]) > 8
    d2, _, _ = _run_json(["keys", "export-public", "--keys", keys, "--out", pub,
                          "--password-env", "PK_PW", "--json"], capsys)
    assert d2["fingerprint"] == d["fingerprint"] and d2["bytes"] > 0
    d3, _, _ = _run_json(["keys", "inspect", pub, "--json"], capsys)
    assert d3["kind"] == "public-bundle"


# -- honest outputs ------------------------------------------------------------------------------
def test_trivial_classifier_chance_and_nan_are_flagged(capsys):
    from privkit.apps._cli_common import flag_metrics

    w = flag_metrics({"accuracy": 0.5, "sensitivity": 1.0, "specificity": 0.0, "n": 10}, "x")
    assert len(w) == 1 and "TRIVIAL" in w[0]
    w = flag_metrics({"accuracy": 1.0, "sensitivity": 1.0, "specificity": float("nan"),
                      "n": 3}, "x")
    assert "specificity is NaN" in w[0]
    assert "AT CHANCE" in flag_metrics({"accuracy": 0.51, "sensitivity": 0.6,
                                        "specificity": 0.4}, "x")[0]
    assert flag_metrics({"accuracy": 0.9, "sensitivity": 0.9, "specificity": 0.9}, "x") == []
    assert capsys.readouterr().err.count("privkit: WARNING:") == 3


def test_out_of_range_inputs_are_counted():
    import torch

    from privkit import nn as pnn
    from privkit.apps.apnea_cli import range_counts

    model = torch.nn.Sequential(pnn.Conv1d(1, 1, 3, method="spatial"), pnn.PolyReLU(degree=3))
    pnn.calibrate(model, torch.rand(16, 1, 32) * 0.1)
    inside = range_counts(model, np.random.default_rng(0).uniform(0, 0.1, (4, 32)))
    outside = range_counts(model, np.full((2, 32), 100.0))
    (name, c), = outside.items()
    assert inside[name]["outside"] == 0
    assert c["outside"] > 0 and c["values"] == 2 * 30 and c["max_abs"] > c["bound"]


def test_anon_judge_at_chance_is_flagged(capsys):
    from privkit.apps.anon_cli import flag_anon_metrics

    w = flag_anon_metrics({"har_acc_real": 0.9, "har_chance": 0.25, "reid_acc_real": 0.26,
                           "reid_chance": 0.25, "mmd_real_vs_anon": float("nan")})
    assert len(w) == 2 and "ReID" in w[0] and "AT CHANCE" in w[0] and "NaN" in w[1]


def test_old_model_names_warn_but_work(tmp_path, capsys):
    from privkit.apps._cli_common import check_model_path

    assert check_model_path(str(tmp_path / "m.pt")) == str(tmp_path / "m.pt")
    assert ".privkit" in capsys.readouterr().err
    check_model_path(str(tmp_path / "m.privkit"))
    assert capsys.readouterr().err == ""


# -- missing extras ------------------------------------------------------------------------------
def test_missing_extra_names_the_extra(monkeypatch, tmp_path, capsys):
    from privkit._optional import require
    from privkit.data.ecg import read_apnea_ecg_record

    monkeypatch.setitem(sys.modules, "wfdb", None)  # import wfdb -> ImportError
    with pytest.raises(MissingDependencyError, match=r"privkit\[ecg\]") as e:
        read_apnea_ecg_record(tmp_path / "a01")
    assert e.value.extra == "ecg" and isinstance(e.value, ImportError)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from privkit.apps.svae_cli import save_grid

    with pytest.raises(MissingDependencyError, match=r"privkit\[plots\]"):
        save_grid(np.zeros((1, 1, 4, 4)), tmp_path / "g.png")
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingDependencyError, match=r"privkit\[serve\]"):
        require("fastapi")


def test_missing_plots_extra_through_the_cli(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc = main(["apnea", "demo", "--smoke", "--backend", "sim", "--encrypted", "1",
               "--png", str(tmp_path / "x.png"), "--json"])
    err = capsys.readouterr().err
    assert rc == 1 and "pip install 'privkit[plots]'" in err


# -- the README ----------------------------------------------------------------------------------
def test_readme_first_code_block_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "fhe.compile" in block
    r = _py(["-c", block], tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip(), "the block prints its result"


def test_default_figure_is_skipped_without_the_plots_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.chdir(tmp_path)
    rc = main(["apnea", "demo", "--smoke", "--backend", "sim", "--encrypted", "1", "--json"])
    out = capsys.readouterr()
    assert rc == 0 and json.loads(out.out)["figure"] is None
    assert "no figure" in out.err and "privkit[plots]" in out.err
    assert not (tmp_path / "out").exists()
