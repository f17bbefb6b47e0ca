"""Targeted mutation testing: plant one known bug at a time and check a named test catches it.

Each mutant is (file, exact original snippet, replacement, the tests expected to catch it). The
script copies the repository (tracked and untracked, non-ignored files) to a temporary directory
-- never touching the working tree --, runs the named tests there once unmutated (the baseline
must pass), then for each mutant writes the mutated file, runs each named test with a timeout
and restores the file. A snippet that is missing or not unique in its file is reported as a
**stale mutant** (an error: the code moved; update the list), never silently skipped.

Run (a slow job, not part of ``pytest``; a few minutes on 2 cores)::

    nice -n 10 python bench/mutants.py                 # all mutants
    python bench/mutants.py --only bn_fold_drops_beta  # some
    python bench/mutants.py --list

Prints a table (mutant, test, caught/survived, seconds) and totals; exit status 0 only when
every mutant was caught and none was stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    why: str = ""


T_BN = "tests/test_compile_batchnorm.py::test_batchnorm_with_random_beta_matches_torch_in_every_strategy"
T_BN_RANDOM = "tests/test_compile_batchnorm.py::test_random_bn_relu_models_match_torch_to_1e9_on_sim"
T_NOISE = "tests/test_dp_noise.py::test_zero_gradient_step_adds_noise_of_std_sigma_c_over_b"
T_ANON = "tests/test_anon_changes_input.py::test_anonymise_changes_every_window_and_lowers_reid"
T_ANON_CLI = "tests/test_anon_changes_input.py::test_cli_apply_output_differs_from_its_input"
T_SEAL_SIM = "tests/test_backend.py::test_seal_and_sim_agree_to_1e7_on_products"
T_LEVEL_FAC = "tests/test_backend.py::test_each_level_product_factor_matches_seal"
T_BINARY = "tests/test_backend.py::test_binary_ops_match_numpy"
T_WIDE = "tests/test_ops_wide.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- the named survivors ---------------------------------------------------------
    Mutant("bn_fold_drops_beta", "privkit/fhe/compiler/core.py",
           '"shift": beta - mod.running_mean.detach().double().numpy() * scale}',
           '"shift": 0.0 * beta - mod.running_mean.detach().double().numpy() * scale}',
           (T_BN,), "BatchNorm folded into conv/linear loses its shift"),
    Mutant("dp_noise_x0_per_parameter", "privkit/dp/fastclip.py",
           "p.grad = (p.summed_grad + noise).view_as(p)",
           "p.grad = (p.summed_grad + noise * 0).view_as(p)",
           (T_NOISE + "[fast_per_parameter_mixed_dtypes-1.3-0.7-8]",), "no noise when dtypes differ"),
    Mutant("anonymise_returns_input", "privkit/apps/anonymiser.py",
           "out = self._run(torch.as_tensor(x), s, t, g).numpy()",
           "out = x.copy()",
           (T_ANON, T_ANON_CLI), "identity anonymiser"),
    Mutant("compiled_relu_coeffs_0.1pct", "privkit/fhe/compiler/rules/activation.py",
           "unit = poly.relu_poly_coeffs(deg, 1.0)",
           "unit = poly.relu_poly_coeffs(deg, 1.0) * 1.001",
           (T_BN_RANDOM, "tests/test_compile_batchnorm.py::test_wide_range_polyrelu_prefolded_into_the_conv_matches_torch"),
           "compiled (prescaled) PolyReLU coefficients 0.1% off"),
    Mutant("backend_product_scale_wrong_prime", "privkit/fhe/backend.py",
           "s = self.params.scale\n        q = float(self.params.primes[a.level])",
           "s = self.params.scale\n        q = float(self.params.primes[a.level - 1])",
           (T_BINARY, T_SEAL_SIM), "ciphertext product declares s*s/q with the wrong prime"),
    Mutant("backend_plain_encoded_at_nominal_scale", "privkit/fhe/backend.py",
           'self._need_level(a, "mul_plain")\n        q = float(self.params.primes[a.level])',
           'self._need_level(a, "mul_plain")\n        q = float(self.params.scale)',
           (T_SEAL_SIM, T_LEVEL_FAC), "plaintext encoded at 2^40 instead of the dropped prime (SEAL)"),
    # -- more scale bookkeeping ----------------------------------------------------------------
    Mutant("sim_drops_s_over_q", "privkit/fhe/sim.py",
           "return a * (true_scale / declared)", "return a",
           (T_BINARY,), "the simulator forgets the s/q factor of a product"),
    Mutant("mul_plain_sum_wrong_prime", "privkit/fhe/backend.py",
           "q = float(self.params.primes[level])\n        raw, is_c, length = None, False, 0",
           "q = float(self.params.primes[level - 1])\n        raw, is_c, length = None, False, 0",
           (T_SEAL_SIM,), "lazy-rescaled sum encodes its plaintexts at the wrong prime (SEAL)"),
    # -- lowerings -----------------------------------------------------------------------------
    Mutant("bn_fold_ignores_eps", "privkit/fhe/compiler/core.py",
           "scale = gamma / np.sqrt(mod.running_var.detach().double().numpy() + mod.eps)",
           "scale = gamma / np.sqrt(mod.running_var.detach().double().numpy())",
           (T_BN,), "a 1e-5 relative error only the 1e-9 simulator tolerance sees"),
    Mutant("bn_unfolded_drops_beta", "privkit/fhe/compiler/rules/linear.py",
           "return be.add_plain(be.mul_plain(ct, scale), shift)",
           "return be.mul_plain(ct, scale)",
           (T_BN + "[unfolded_affine_step]",), "the per-channel affine step loses its shift"),
    Mutant("avgpool_fold_wrong_scale", "privkit/fhe/compiler/rules/pool.py",
           "ctx.fold_forward *= 1.0 / area", "ctx.fold_forward *= 1.0 / (area + 1)",
           (T_BN + "[batched]",), "average pool's 1/k folded forward wrongly"),
    # -- operators -----------------------------------------------------------------------------
    Mutant("poly_cheb_split_r_power", "privkit/fhe/ops/poly/evaluate.py",
           "r[g - j] -= e[i] * self.r ** (2 * j)", "r[g - j] -= e[i] * self.r ** j",
           (T_WIDE + "::test_poly_eval_every_split_path_matches_twin[cheb_folded_r]",),
           "Chebyshev split with a folded half-width r != 1"),
    Mutant("gather_skips_cleaning", "privkit/fhe/ops/compaction.py",
           'return mask(backend, ct, np.arange(pos.size), section="mask").replace(layout=Layout())',
           "return ct.replace(layout=Layout(), length=int(pos.size))",
           (T_WIDE + "::test_gather_moves_positions_and_cleans_the_rest",),
           "in-place gather leaves garbage past the result"),
    Mutant("diagonal_bsgs_no_prerotation", "privkit/fhe/ops/diagonal.py",
           "pv = np.roll(v, g) if g else v", "pv = v",
           (T_WIDE + "::test_diagonal_matvec_equals_its_twin_on_full_garbage_vectors",),
           "baby-step giant-step without pre-rotated plaintexts"),
    Mutant("conv_tap_mask_reads_past_edge", "privkit/fhe/ops/conv_spatial.py",
           "ok &= (src >= 0) & (src < self.shape[a])", "ok &= (src >= 0) & (src <= self.shape[a])",
           (T_WIDE + "::test_strided_padded_conv_nd_ignores_garbage_past_the_input",),
           "a tap reads one slot past the row (garbage / the next row)"),
    Mutant("sum_slots_rotates_accumulator", "privkit/fhe/backend.py",
           "acc = self.add(acc, self.rotate(a, m))", "acc = self.add(acc, self.rotate(acc, m))",
           ("tests/test_backend.py::test_sum_slots",), "odd-length sums double-count"),
    # -- DP noise and accounting ---------------------------------------------------------------
    Mutant("dp_noise_x0_flat", "privkit/dp/fastclip.py",
           "flat = flat + generate_noise(", "flat = flat + 0 * generate_noise(",
           (T_NOISE + "[fast_flat-1.3-0.7-8]",), "no noise on the flat fast path"),
    Mutant("dp_noise_std_without_clip", "privkit/dp/fastclip.py",
           "return self.noise_multiplier * self.max_grad_norm", "return self.noise_multiplier",
           (T_NOISE + "[fast_flat-1.3-0.7-8]",), "noise not scaled by the clipping norm"),
    Mutant("dp_flat_grad_not_divided_by_batch", "privkit/dp/fastclip.py",
           "self._flat_grad.div_(self.expected_batch_size * self.accumulated_iterations)",
           "self._flat_grad.div_(self.accumulated_iterations)",
           (T_NOISE + "[fast_flat-1.3-0.7-8]",), "noisy sum not averaged over the batch"),
    Mutant("dp_sample_rate_halved", "privkit/dp/engine.py",
           "sample_rate = 1.0 / n_batches", "sample_rate = 0.5 / n_batches",
           (T_NOISE + "[hooks-1.3-0.7-8]", "tests/test_dp_engine.py::test_epsilon_matches_opacus_accountant"),
           "the accountant is told a smaller sampling rate (epsilon too small)"),
    # -- anonymiser ------------------------------------------------------------------------------
    Mutant("anonymise_half_leaky", "privkit/apps/anonymiser.py",
           "out = self._run(torch.as_tensor(x), s, t, g).numpy()",
           "out = 0.5 * x + 0.5 * self._run(torch.as_tensor(x), s, t, g).numpy()",
           (T_ANON,), "output half made of the input"),
    Mutant("anon_apply_writes_input", "privkit/apps/anon_cli.py",
           'out = {"windows": norm.inverse(xa) if norm else xa,',
           'out = {"windows": norm.inverse(ds.windows) if norm else xa,',
           (T_ANON_CLI,), "the CLI writes the real windows"),
)


@dataclasses.dataclass
class Row:
    mutant: str
    test: str
    result: str  # caught | survived | timeout (caught) | stale | error
    seconds: float
    detail: str = ""


def _copy_repo(dst: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
        capture_output=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            out = dst / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)


def _pytest(repo: Path, tests: list[str], timeout: float) -> tuple[int | None, float, str]:
    """(exit code or None on timeout, seconds, last lines)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=",
           "--no-header", *tests]
    env = dict(os.environ, HYPOTHESIS_PROFILE="ci", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, "timeout"
    tail = " | ".join((p.stdout + p.stderr).strip().splitlines()[-2:])
    return p.returncode, time.perf_counter() - t0, tail


def _check_snippet(repo: Path, m: Mutant) -> str | None:
    path = repo / m.file
    if not path.is_file():
        return f"file {m.file} not found"
    n = path.read_text().count(m.original)
    if n != 1:
        return f"snippet found {n} times in {m.file} (needs exactly 1)"
    return None


def run(mutants: list[Mutant], timeout: float, keep: bool = False) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="privkit-mutants-"))
    try:
        _copy_repo(tmp)
        tests = sorted({t for m in mutants for t in m.tests})
        code, secs, tail = _pytest(tmp, tests, timeout * 3)
        notes.append(f"baseline (unmutated copy, {len(tests)} test ids): exit {code} in {secs:.0f} s")
        if code != 0:
            notes.append(f"BASELINE FAILED: {tail}")
            return [Row(m.name, "-", "error", 0.0, "baseline failed") for m in mutants], notes
        for m in mutants:
            stale = _check_snippet(tmp, m)
            if stale:
                rows.append(Row(m.name, "-", "stale", 0.0, stale))
                continue
            path = tmp / m.file
            original = path.read_text()
            path.write_text(original.replace(m.original, m.replacement))
            try:
                for t in m.tests:
                    code, secs, tail = _pytest(tmp, [t], timeout)
                    if code is None:
                        res = "timeout (caught)"
                    elif code == 1:
                        res = "caught"
                    elif code == 0:
                        res = "survived"
                    else:
                        res = "error"
                    rows.append(Row(m.name, t, res, secs, "" if res != "error" else tail))
            finally:
                path.write_text(original)
    finally:
        if keep:
            notes.append(f"copy kept at {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows, notes


def report(rows: list[Row], mutants: list[Mutant], notes: list[str], command: str) -> tuple[str, bool]:
    def short(t: str) -> str:
        return t.replace("tests/", "").replace("test_", "")

    w = max(len(m.name) for m in mutants)
    wt = max([len(short(r.test)) for r in rows] + [4])
    lines = [f"{'mutant':<{w}}  {'test':<{wt}}  {'result':<16}  seconds"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r.mutant:<{w}}  {short(r.test):<{wt}}  {r.result:<16}  {r.seconds:7.1f}"
                     + (f"  ({r.detail})" if r.detail else ""))
    by = {}
    for r in rows:
        by.setdefault(r.mutant, []).append(r.result)
    caught = [k for k, v in by.items() if any(x.startswith(("caught", "timeout")) for x in v)]
    stale = [k for k, v in by.items() if "stale" in v]
    errors = [k for k, v in by.items() if "error" in v and k not in caught]
    survived = [k for k, v in by.items() if k not in caught and k not in stale and k not in errors]
    lines += ["", *notes,
              f"mutants run: {len(by) - len(stale)}   caught: {len(caught)}   survived: {len(survived)}"
              f"   stale: {len(stale)}   errors: {len(errors)}"]
    if survived:
        lines.append("SURVIVORS: " + ", ".join(survived))
    if stale:
        lines.append("STALE (update bench/mutants.py): " + ", ".join(stale))
    lines.append(f"command: {command}")
    ok = not survived and not stale and not errors
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="mutant names to run (default: all)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per test run")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--json", help="also write the rows as JSON to this path")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)
    mutants = list(MUTANTS)
    if args.only:
        unknown = set(args.only) - {m.name for m in mutants}
        if unknown:
            ap.error(f"unknown mutants: {sorted(unknown)}")
        mutants = [m for m in mutants if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.file}: {m.why}\n    -> {', '.join(m.tests)}")
        return 0
    command = "python " + " ".join([os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])])
    rows, notes = run(mutants, args.timeout, args.keep)
    text, ok = report(rows, mutants, notes, command)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
