"""An Opacus-shaped front door: ``from privkit.dp import PrivacyEngine`` in an Opacus script.

:class:`PrivacyEngine` has Opacus' calling convention (``make_private``,
``make_private_with_epsilon``, ``get_epsilon(delta)``, ``accountant``) and runs privkit's
:func:`~privkit.dp.make_private` underneath: the same validation (batch norms refused by name),
fast clipping, honest accounting (PRV with a stated RDP fallback), budget warnings. The
:class:`~privkit.dp.DPTraining` of the last call is ``engine.training`` (report, checkpoints).

>>> import torch
>>> from torch import nn
>>> ds = torch.utils.data.TensorDataset(torch.randn(64, 3), torch.randint(0, 2, (64,)))
>>> model = nn.Linear(3, 2)
>>> engine = PrivacyEngine()
>>> model, optimizer, loader = engine.make_private(
...     module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
...     data_loader=torch.utils.data.DataLoader(ds, batch_size=16),
...     noise_multiplier=1.0, max_grad_norm=1.0)
>>> engine.get_epsilon(1e-5)
0.0
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ParameterError
from .engine import DPTraining, make_private

__all__ = ["PrivacyEngine"]

_IGNORED_OK = {"clipping": "flat"}


class PrivacyEngine:
    """Opacus' ``PrivacyEngine`` interface over :func:`privkit.dp.make_private`.

    ``accountant`` is ``"prv"`` (default) or ``"rdp"``; ``secure_mode=True`` is refused (privkit
    uses torch's ordinary RNG for the noise, as Opacus does by default) rather than ignored.
    """

    def __init__(self, *, accountant: str = "prv", secure_mode: bool = False) -> None:
        if secure_mode:
            raise ParameterError(
                "secure_mode=True is not supported by privkit (the noise uses torch's ordinary "
                "RNG); use opacus.PrivacyEngine(secure_mode=True) directly"
            )
        self.accountant_name = accountant
        self.training: DPTraining | None = None

    @property
    def accountant(self) -> Any:
        """The Opacus accountant of the last ``make_private`` call (``.history``, ``.mechanism()``)."""
        return None if self.training is None else self.training.engine.accountant

    def _check(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        for k, v in list(kwargs.items()):
            if k in _IGNORED_OK:
                if v != _IGNORED_OK[k]:
                    raise ParameterError(f"{k}={v!r} is not supported by privkit (only "
                                         f"{_IGNORED_OK[k]!r})")
                kwargs.pop(k)
        return kwargs

    def make_private(
        self, *, module: nn.Module, optimizer: Any, data_loader: Any, noise_multiplier: float,
        max_grad_norm: float, poisson_sampling: bool = True, grad_sample_mode: str = "fast",
        **kwargs: Any,
    ) -> DPTraining:
        """Opacus' ``make_private``: returns something that unpacks as
        ``model, optimizer, data_loader`` (privkit's :class:`~privkit.dp.DPTraining`)."""
        kwargs = self._check(dict(kwargs))
        self.training = make_private(
            module, optimizer, data_loader, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, poisson_sampling=poisson_sampling,
            grad_sample_mode=grad_sample_mode, accountant=self.accountant_name, **kwargs,
        )
        return self.training

    def make_private_with_epsilon(
        self, *, module: nn.Module, optimizer: Any, data_loader: Any, target_epsilon: float,
        target_delta: float, epochs: int, max_grad_norm: float, poisson_sampling: bool = True,
        grad_sample_mode: str = "fast", **kwargs: Any,
    ) -> DPTraining:
        """Opacus' ``make_private_with_epsilon`` (noise calibrated to ``target_epsilon``)."""
        kwargs = self._check(dict(kwargs))
        self.training = make_private(
            module, optimizer, data_loader, target_epsilon=target_epsilon, delta=target_delta,
            epochs=epochs, max_grad_norm=max_grad_norm, poisson_sampling=poisson_sampling,
            grad_sample_mode=grad_sample_mode, accountant=self.accountant_name, **kwargs,
        )
        return self.training

    def get_epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0 before ``make_private``)."""
        return 0.0 if self.training is None else self.training.get_epsilon(delta)
