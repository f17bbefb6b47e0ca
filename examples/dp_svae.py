"""Train the spiking VAE with DP-SGD at a real epsilon, then look at what the epsilon means.

    python examples/dp_svae.py --smoke          # tiny sizes, well under a minute on a laptop CPU
    python examples/dp_svae.py --epsilon 5      # larger model, a few minutes

Shows: target-epsilon calibration, the privacy report, the paper's "noise 0.001" schedule and its
real epsilon, reconstructions / samples as a PNG grid, and a membership-inference check.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from privkit.apps.svae import SpikingVAE
from privkit.data.images import load_dataset
from privkit.dp import DPConfig, compute_epsilon
from privkit.dp.attacks import membership_inference


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (< 60 s)")
    ap.add_argument("--epsilon", type=float, default=5.0)
    ap.add_argument("--out", default="out/dp_svae")
    args = ap.parse_args()
    t0 = time.time()

    size = 8 if args.smoke else 16
    train = load_dataset("digits", "train", image_size=size, limit=300 if args.smoke else None)
    test = load_dataset("digits", "test", image_size=size, limit=100 if args.smoke else None)
    sizes = ({"widths": (4, 8), "latent_dim": 4, "n_steps": 2, "k": 3} if args.smoke
             else {"widths": (16, 32), "latent_dim": 16, "n_steps": 4, "k": 5})
    model = SpikingVAE(image_size=size, **sizes)

    dp = DPConfig(target_epsilon=args.epsilon, max_grad_norm=1.0, epochs=1 if args.smoke else 5,
                  batch_size=100 if args.smoke else 64)
    model.fit(train, dp=dp, lr=2e-3)
    rep = model.privacy_report()
    print(rep.summary())
    print(f"reconstruction MSE on held-out digits: {model.evaluate(test)['recon_mse']:.4f}")
    mia = membership_inference(model, train, test, repeats=1)
    print(f"membership inference AUC {mia['auc']:.3f} (0.5 = the attacker learns nothing)")

    # The DP-SVAE paper's schedule with its noise multiplier 0.001: the real epsilon.
    N = 60000
    paper = compute_epsilon(noise_multiplier=0.001, sample_rate=250 / N, steps=36000, delta=1 / N)
    print(f"paper's noise 0.001, 150 epochs of MNIST: epsilon = {paper.epsilon:.3g} "
          f"({paper.accountant} accountant{'; PRV fell back' if paper.fell_back else ''})")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import numpy as np

        from privkit.apps.svae_cli import save_grid

        os.makedirs(args.out, exist_ok=True)
        save_grid(np.concatenate([test.images[:16], model.reconstruct(test.images[:16]),
                                  model.sample(16)]), os.path.join(args.out, "grid.png"), nrow=16)
    print(f"wrote {os.path.join(args.out, 'grid.png')} (inputs / reconstructions / samples); "
          f"{time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
