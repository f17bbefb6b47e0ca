"""Upload size and server time when the client encrypts at the program's start level.

    python bench/upload_level.py [--repeat 5]

For three models compiled with ``params="auto"`` at 128-bit (TenSEAL's tutorial CNN on 28x28,
a 1-D conv net on 16 values, the apnea v2 detector), with real SEAL keys: the bytes of one
ciphertext envelope sent fresh (every level) and at ``ClientSpec.encrypt_level`` (the level the
server starts from), the client's encrypt time and the server's ``infer`` time (median of
``--repeat``), and the largest difference between the two decrypted results. Weights are
random (sizes and times do not depend on them).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from privkit import fhe  # noqa: E402
from privkit import nn as pnn  # noqa: E402
from privkit.deploy import Client, Server  # noqa: E402


def _models() -> list[tuple[str, torch.nn.Module, tuple[int, ...], np.ndarray]]:
    from image_cnns import tenseal_tutorial_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    out = []
    m = tenseal_tutorial_model()
    pnn.calibrate(m, torch.rand(32, 1, 28, 28))
    out.append(("tutorial CNN 1x28x28", m, (1, 28, 28), rng.random((1, 28, 28))))
    m = torch.nn.Sequential(pnn.Conv1d(1, 2, 3), pnn.PolyReLU(degree=3), pnn.AvgPool1d(2),
                            pnn.Flatten(), pnn.Linear(14, 2))
    pnn.calibrate(m, torch.randn(64, 1, 16))
    out.append(("1-D conv net 1x16", m, (1, 16), rng.uniform(-2, 2, (1, 16))))
    from privkit.apps.apnea import ApneaConfig, build_apnea_model

    cfg = ApneaConfig()
    m = build_apnea_model(cfg).eval()
    pnn.calibrate(m, torch.randn(64, 1, cfg.window))
    out.append(("apnea v2 1x%d" % cfg.window, m, (1, cfg.window), rng.uniform(-2, 2, (1, cfg.window))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    print("command: python bench/upload_level.py --repeat", args.repeat)
    print(f"{'model':24} {'ring':>8} {'depth':>5} {'level':>9} {'bytes fresh':>12} {'bytes sent':>11} "
          f"{'ratio':>6} {'enc fresh/sent s':>17} {'infer fresh/sent s':>19} {'max diff':>9}")
    for name, model, shape, x in _models():
        prog = fhe.compile(model, input_shape=shape, params="auto")
        prog.calibrate_input(np.stack([x, -x if x.min() < 0 else x * 0.5]))
        spec = prog.client_spec()
        client = Client(spec)
        client.keygen()
        fresh = Client(dataclasses.replace(spec, encrypt_level=None), client.keys)
        server = Server(prog)
        kid = server.register(client.bundle_envelope())
        stats = {}
        for label, c in (("fresh", fresh), ("sent", client)):
            te, ti, res = [], [], None
            for _ in range(args.repeat):
                t = time.perf_counter()
                env = c.encrypt(x)
                te.append(time.perf_counter() - t)
                t = time.perf_counter()
                out = server.infer(env, kid)
                ti.append(time.perf_counter() - t)
                res = c.decrypt(out)
            stats[label] = (len(env), statistics.median(te), statistics.median(ti), res)
        f, s = stats["fresh"], stats["sent"]
        lvl = f"{spec.encrypt_level if spec.encrypt_level is not None else prog.params.depth}/{prog.params.depth}"
        print(f"{name:24} {'N=%d' % prog.params.poly_degree:>8} {prog.depth:>5} {lvl:>9} {f[0]:>12,} {s[0]:>11,} "
              f"{s[0] / f[0]:>6.2f} {f[1]:>8.3f}/{s[1]:<8.3f} {f[2]:>9.3f}/{s[2]:<9.3f} "
              f"{np.abs(f[3] - s[3]).max():>9.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
