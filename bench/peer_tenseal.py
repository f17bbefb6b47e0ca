"""privkit vs TenSEAL on TenSEAL's own tutorial CNN, same trained weights, one run.

The model of TenSEAL's "Encrypted Convolution on MNIST" tutorial, trained here on Fashion-MNIST:
Conv2d(1, 4, kernel 7, stride 3) -> x² -> Flatten -> Linear(256, 64) -> x² -> Linear(64, 10).

(a) TenSEAL's high-level API exactly as its tutorial uses it: ``ts.context(CKKS, 8192,
    [31, 26, 26, 26, 26, 26, 26, 31])``, global scale 2**26, Galois keys, the client encodes
    with ``ts.im2col_encoding``; the server runs ``conv2d_im2col`` per output channel,
    ``CKKSVector.pack_vectors``, ``square_``, ``mm`` and adds the biases.
(b) privkit: ``privkit.fhe.compile`` of the same model at 128-bit security; when several images
    share one ciphertext (``--batch``), the latency per image is the batch latency divided by
    the batch size (amortised) and the output says so.

Prints per-image latency (median; server evaluation, and client encrypt+decrypt), agreement of
the predicted classes, max logit error against the plaintext model, plaintext and encrypted
accuracy, the parameters and the command.

    python bench/peer_tenseal.py                    # 100 test images, ~3 training epochs
    python bench/peer_tenseal.py --images 20 --smoke
    python bench/peer_tenseal.py --skip-tenseal     # privkit side only

Data: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (never downloaded); when
it is absent the run says so and uses a SYNTHETIC labelled set.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import image_cnns as ic


# -- (a) TenSEAL tutorial ---------------------------------------------------------------------------
class TenSEALTutorialNet:
    """The tutorial's ``EncConvNet``, reading the weights from our trained model."""

    def __init__(self, model: torch.nn.Sequential) -> None:
        conv, fc1, fc2 = model[0], model[3], model[5]
        self.conv_weight = conv.weight.data.view(conv.out_channels, *conv.kernel_size).tolist()
        self.conv_bias = conv.bias.data.tolist()
        self.fc1_weight = fc1.weight.T.data.tolist()
        self.fc1_bias = fc1.bias.data.tolist()
        self.fc2_weight = fc2.weight.T.data.tolist()
        self.fc2_bias = fc2.bias.data.tolist()

    def forward(self, enc_x, windows_nb):
        import tenseal as ts

        channels = []
        for kernel, bias in zip(self.conv_weight, self.conv_bias):
            channels.append(enc_x.conv2d_im2col(kernel, windows_nb) + bias)
        enc_x = ts.CKKSVector.pack_vectors(channels)
        enc_x.square_()
        enc_x = enc_x.mm(self.fc1_weight) + self.fc1_bias
        enc_x.square_()
        enc_x = enc_x.mm(self.fc2_weight) + self.fc2_bias
        return enc_x


def run_tenseal(model, images: np.ndarray) -> dict:
    import tenseal as ts

    bits = 26
    t = time.perf_counter()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192,
                     coeff_mod_bit_sizes=[31, bits, bits, bits, bits, bits, bits, 31])
    ctx.global_scale = 2 ** bits
    ctx.generate_galois_keys()
    keygen_s = time.perf_counter() - t
    net = TenSEALTutorialNet(model)
    conv = model[0]
    logits, server, client = [], [], []
    for img in images:
        t0 = time.perf_counter()
        enc_x, windows_nb = ts.im2col_encoding(ctx, img.reshape(28, 28).tolist(), conv.kernel_size[0],
                                               conv.kernel_size[1], conv.stride[0])
        t1 = time.perf_counter()
        out = net.forward(enc_x, windows_nb)
        t2 = time.perf_counter()
        logits.append(out.decrypt())
        t3 = time.perf_counter()
        server.append(t2 - t1)
        client.append((t1 - t0) + (t3 - t2))
    return {"logits": np.array(logits), "server_s": server, "client_s": client, "keygen_s": keygen_s,
            "images_per_ciphertext": 1, "threads": ctx.n_threads if hasattr(ctx, "n_threads") else None,
            "params": "N=8192, coeff [31, 26x6, 31] (218 bits, 128-bit security), scale 2^26, "
                      "im2col encoding by the client"}


# -- (b) privkit ------------------------------------------------------------------------------------
def run_privkit(model, images: np.ndarray, params: str, batch: int, backend: str) -> dict:
    from privkit import fhe

    if params == "tenseal":  # TenSEAL's tutorial parameters: N=8192, [31, 26 x 6, 31], scale 2^26
        params = fhe.CKKSParams(poly_degree=8192, coeff_bits=(31,) + (26,) * 6 + (31,), scale_bits=26)
    t = time.perf_counter()
    program = fhe.compile(model, input_shape=(1, 28, 28), params=params, batch=batch)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    keys = program.keygen(backend=backend)
    bundle = keys.public_bundle()
    keygen_s = time.perf_counter() - t
    logits, server, client = [], [], []
    n = len(images)
    pad = (-n) % batch
    xs = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)]) if pad else images
    reports = None
    for i in range(0, len(xs), batch):
        chunk = xs[i : i + batch].astype(np.float64)
        x = chunk[0] if batch == 1 else chunk
        t0 = time.perf_counter()
        ct = program.encrypt_input(keys, x)
        t1 = time.perf_counter()
        out = program.run(ct, bundle, allow_insecure=backend == "sim")
        t2 = time.perf_counter()
        y = program.decrypt_output(keys, out)
        t3 = time.perf_counter()
        logits.extend(np.atleast_2d(y))
        server.append((t2 - t1) / batch)
        client.append(((t1 - t0) + (t3 - t2)) / batch)
        if reports is None:
            reports = program.report()
    return {"logits": np.array(logits[:n]), "server_s": server, "client_s": client, "keygen_s": keygen_s,
            "compile_s": compile_s, "images_per_ciphertext": batch, "params": program.params.describe(),
            "security_bits": program.params.security_bits, "depth": program.depth,
            "rotation_keys": len(program.rotations), "plan": program.plan_table(), "report": reports}


def _best_privkit(model, images, args) -> dict:
    """Try the batch sizes asked for; keep the fastest per image (amortised)."""
    results, errors = [], []
    for b in args.batch:
        try:
            probe = run_privkit(model, images[: max(b, 1)], args.params, b, args.backend)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            errors.append(f"batch {b}: {type(e).__name__}: {e}")
            continue
        results.append((statistics.median(probe["server_s"]), b))
    if not results:
        return {"error": "privkit could not compile / run the model:\n  " + "\n  ".join(errors)}
    best = min(results)[1]
    out = run_privkit(model, images, args.params, best, args.backend)
    out["batch_probe"] = {b: s for s, b in results}
    out["batch_errors"] = errors
    return out


def _summary(name: str, res: dict, ref_logits: np.ndarray, labels: np.ndarray) -> dict:
    pred = res["logits"].argmax(1)
    return {
        "system": name,
        "server_s_median_per_image": statistics.median(res["server_s"]),
        "client_s_median_per_image": statistics.median(res["client_s"]),
        "images_per_ciphertext": res["images_per_ciphertext"],
        "agreement": float((pred == ref_logits.argmax(1)).mean()),
        "max_logit_error": float(np.abs(res["logits"] - ref_logits).max()),
        "encrypted_accuracy": float((pred == labels).mean()),
        "keygen_s": res["keygen_s"],
        "params": res["params"],
        "pred": pred.tolist(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100, help="test images run encrypted (default 100)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-limit", type=int, default=None, help="training images (default: all)")
    ap.add_argument("--params", default="auto", help="privkit parameters: a preset name, 'auto', or 'tenseal' (TenSEAL's tutorial "
                         "parameters: N=8192, primes [31, 26 x 6, 31], scale 2^26)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4],
                    help="privkit images per ciphertext to try; the fastest per image is reported")
    ap.add_argument("--backend", default="seal", choices=["seal", "sim"])
    ap.add_argument("--linear", default="bsgs", choices=["bsgs", "diag"],
                    help="privkit's encrypted Linear: baby-step giant-step (default) or one rotation per diagonal")
    ap.add_argument("--skip-tenseal", action="store_true")
    ap.add_argument("--skip-privkit", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny run: 4 images, 2000 training images, 1 epoch")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.smoke:
        args.images = min(args.images, 4)
        args.train_limit = args.train_limit or 2000
        args.epochs = 1
    print("command: python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:])))
    train, test = ic.load_train_test(args.train_limit)
    print(f"data: {train.name}, {len(train)} training images, test images 0..{args.images - 1} of {len(test)}")
    torch.manual_seed(0)
    model = ic.tenseal_tutorial_model(linear_method=args.linear)
    t = time.perf_counter()
    losses = ic.train_classifier(model, train.images, train.labels, epochs=args.epochs)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t:.1f} s, losses {[round(v, 3) for v in losses]}")
    print(model)
    model = model.double().eval()
    x = test.images[: args.images].astype(np.float64)
    y = test.labels[: args.images]
    with torch.no_grad():
        ref = model(torch.as_tensor(x)).numpy()
    full_acc = ic.accuracy(model.float(), test.images, test.labels)
    model = model.double()
    plain_acc = float((ref.argmax(1) == y).mean())
    print(f"plaintext accuracy: {plain_acc:.3f} on these {args.images} images, {full_acc:.4f} on all {len(test)}")
    rows, out = [], {"command": sys.argv, "data": train.name, "plaintext_accuracy": plain_acc,
                     "plaintext_accuracy_full_test": full_acc, "images": args.images}
    if not args.skip_tenseal:
        res = run_tenseal(model, x)
        rows.append(_summary("TenSEAL (tutorial API)", res, ref, y))
    if not args.skip_privkit:
        try:
            res = _best_privkit(model, x, args)
        except Exception:  # noqa: BLE001
            res = {"error": traceback.format_exc()}
        if "error" in res:
            print("\nprivkit: NOT RUN -", res["error"])
            out["privkit_error"] = res["error"]
        else:
            rows.append(_summary(f"privkit ({args.backend})", res, ref, y))
            print(f"\nprivkit plan ({res['params']}, depth {res['depth']}, {res['rotation_keys']} rotation keys, "
                  f"compile {res['compile_s']:.2f} s; per-image seconds by batch: {res['batch_probe']}):")
            print(res["plan"])
            print("privkit per-layer report of the first ciphertext:")
            print(res["report"])
            if res["batch_errors"]:
                print("batch sizes that failed:", *res["batch_errors"], sep="\n  ")
    print()
    head = f"{'system':<26}{'server s/img':>13}{'client s/img':>13}{'img/ct':>7}{'agree':>7}{'max|dlogit|':>12}{'enc acc':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['system']:<26}{r['server_s_median_per_image']:>13.4f}{r['client_s_median_per_image']:>13.4f}"
              f"{r['images_per_ciphertext']:>7}{r['agreement']:>7.1%}{r['max_logit_error']:>12.2e}"
              f"{r['encrypted_accuracy']:>8.1%}")
    for r in rows:
        print(f"  {r['system']}: {r['params']}; keygen {r['keygen_s']:.2f} s")
    if any(r["images_per_ciphertext"] > 1 for r in rows):
        print("  (img/ct > 1: latency per image is the ciphertext's latency divided by the images in it: amortised)")
    if len(rows) == 2:
        speed = rows[0]["server_s_median_per_image"] / rows[1]["server_s_median_per_image"]
        both = float(np.mean(np.array(rows[0]["pred"]) == np.array(rows[1]["pred"])))
        print(f"privkit / TenSEAL server speed-up per image: {speed:.2f}x (target >= 5x); "
              f"classes agree between the two on {both:.1%} of the images")
        out["speedup"] = speed
        out["tenseal_privkit_agreement"] = both
    out["results"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
