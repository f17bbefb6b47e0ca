"""``privkit svae train | evaluate | sample`` end to end on tiny sizes."""

from __future__ import annotations

import argparse
import json

import pytest

from privkit.apps import svae_cli


def _run(argv, capsys):
    parser = argparse.ArgumentParser(prog="privkit")
    sub = parser.add_subparsers(dest="command")
    svae_cli.register(sub)
    args = parser.parse_args(argv)
    rc = args.func(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


TINY = ["--dataset", "digits", "--limit", "120", "--image-size", "8", "--widths", "4,8",
        "--latent", "4", "--steps", "2", "--k", "3", "--batch-size", "40", "--epochs", "1",
        "--no-progress"]


def test_train_evaluate_sample(tmp_path, capsys):
    model = tmp_path / "m.pt"
    rc, out, err = _run(["svae", "train", *TINY, "--dp", "--noise-multiplier", "0.001",
                         "--out", str(model), "--png-dir", str(tmp_path), "--json"], capsys)
    assert rc == 0 and model.is_file()
    res = json.loads(out)
    assert res["epsilon"] > 100 and res["noise_multiplier"] == 0.001
    assert "NO MEANINGFUL PRIVACY" in err  # flagged loudly
    assert (tmp_path / "reconstructions.png").stat().st_size > 0
    assert (tmp_path / "samples.png").stat().st_size > 0

    rc, out, _ = _run(["svae", "evaluate", "--model", str(model), "--dataset", "digits",
                       "--limit", "60", "--json"], capsys)
    res = json.loads(out)
    assert rc == 0 and res["recon_mse"] > 0 and res["privacy"]["kind"] == "dp"

    rc, out, _ = _run(["svae", "sample", "--model", str(model), "-n", "4",
                       "--png", str(tmp_path / "s.png")], capsys)
    assert rc == 0 and "svae-spiking" in out and (tmp_path / "s.png").is_file()


def test_ann_non_private_table(tmp_path, capsys):
    model = tmp_path / "a.pt"
    rc, out, _ = _run(["svae", "train", *TINY, "--ann", "--out", str(model)], capsys)
    assert rc == 0 and "svae-ann" in out and "No privacy protection" in out


def test_dp_flags_validated(tmp_path, capsys):
    from privkit.errors import ParameterError

    with pytest.raises(ParameterError, match="--dp needs"):
        _run(["svae", "train", *TINY, "--dp", "--out", str(tmp_path / "x.pt")], capsys)
