"""ray_infer on a local one-machine Ray cluster gives the in-process results."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the 'distributed' extra (ray) is not installed")

from deploy_models import small_program  # noqa: E402
from privkit.deploy import Client, Server, ray_infer  # noqa: E402
from privkit.errors import SecretKeyExposureError  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_infer_matches_in_process(local_ray):
    prog = small_program()
    client = Client(prog.client_spec())
    client.keygen(backend="sim")
    xs = np.random.default_rng(7).normal(size=(6, 16))
    cts = [client.encrypt(x) for x in xs[:4]] + [client.encrypt_batch(list(xs[4:]))]
    outs = ray_infer(prog, client.bundle_envelope(), cts, workers=2, allow_insecure=True)
    server = Server(prog, allow_insecure=True)
    server.register(client.bundle_envelope())
    for ct, out in zip(cts, outs):
        assert np.array_equal(client.decrypt(out), client.decrypt(server.infer(ct)))
    with pytest.raises(SecretKeyExposureError):
        ray_infer(prog, client.keys, cts[:1], allow_insecure=True)
