"""Which GAN epoch the anonymiser keeps: :class:`EpochSelector` scores one validation record
per epoch under the privacy and activity constraints of an :class:`~privkit.anon.config.AnonConfig`;
:func:`select_epoch` replays it over a history."""

from __future__ import annotations

from ..errors import ParameterError
from .config import AnonConfig

__all__ = ["EpochSelector", "select_epoch"]


class EpochSelector:
    """Model selection over GAN epochs, fed one validation record per epoch (``cfg.selection``).

    A record holds ``score`` (``activity_ratio - privacy``, higher is better) and, for the
    ``"constrained"`` rule, ``activity_ratio`` (the lowest selection-critic ratio) and ``reid``
    (the frozen ReID judge's accuracy, ``ag``/``acg``) or ``transfer`` (``dfi``); a record
    without them is never feasible. An epoch is *feasible* when ``activity_ratio >=
    cfg.select_activity_min`` and ``reid <= cfg.select_reid_factor / n_subjects`` or ``transfer
    >= cfg.select_transfer_min``. Any feasible epoch beats every infeasible one; among feasible
    epochs, and among infeasible ones, the higher score wins (ties among feasible epochs: the
    higher activity ratio). Keeping the best score rather than the best activity among feasible
    epochs avoids settling on the least private epoch that just meets the bound. ``patience``
    counts epochs without improvement only once a feasible epoch has been seen (with
    ``"score"``: always), so training does not stop early on a run that has not yet reached the
    privacy target.
    """

    def __init__(self, cfg: AnonConfig, n_subjects: int) -> None:
        if n_subjects < 1:
            raise ParameterError(f"n_subjects must be >= 1, got {n_subjects}")
        self.cfg, self.chance = cfg, 1.0 / n_subjects
        self.best_key: tuple[float, float, float] | None = None
        self.best_epoch: int | None = None
        self.bad = 0

    def feasible(self, rec: dict[str, float]) -> bool:
        """Whether one validation record meets the privacy and activity constraints."""
        cfg = self.cfg
        act = rec.get("activity_ratio")
        if act is None or act < cfg.select_activity_min:
            return False
        if "transfer" in rec:
            return rec["transfer"] >= cfg.select_transfer_min
        if "reid" in rec:
            return rec["reid"] <= cfg.select_reid_factor * self.chance + 1e-12
        return False

    def key(self, rec: dict[str, float]) -> tuple[float, float, float]:
        """Sort key of a record (larger is better)."""
        if self.cfg.selection == "constrained" and self.feasible(rec):
            return (1.0, float(rec["score"]), float(rec["activity_ratio"]))
        return (0.0, float(rec["score"]), 0.0)

    @property
    def found_feasible(self) -> bool:
        return self.best_key is not None and self.best_key[0] > 0

    def update(self, epoch: int, rec: dict[str, float]) -> bool:
        """Feed one epoch's record; True when it becomes the kept epoch."""
        k = self.key(rec)
        if self.best_key is None or k > self.best_key:
            self.best_key, self.best_epoch, self.bad = k, epoch, 0
            return True
        if self.cfg.selection == "score" or self.found_feasible:
            self.bad += 1
        return False

    @property
    def max_epochs(self) -> int:
        """``gan_epochs`` plus the extra epochs a run may take while none has been feasible."""
        return self.cfg.gan_epochs + self.cfg.select_extra_epochs

    def past_budget(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) should not be trained: it is beyond ``gan_epochs`` and
        either a feasible epoch exists or the rule is ``"score"`` (extra epochs are trained only
        while the constrained rule has found no feasible epoch)."""
        return epoch >= self.cfg.gan_epochs and (self.cfg.selection != "constrained"
                                                 or self.found_feasible)

    @property
    def stop(self) -> bool:
        """Whether early stopping should end training now."""
        return self.bad >= self.cfg.patience

    def restore(self, history: list[dict[str, float]], best_state: tuple | None, *nets) -> None:
        """Mark the kept epoch in ``history`` and load its saved ``best_state`` (one state dict
        per net, in order) into ``nets``, which are left in eval mode."""
        for rec in history:
            rec["selected"] = float(rec["epoch"] == self.best_epoch)
        for net, state in zip(nets, best_state or (None,) * len(nets)):
            if state is not None:
                net.load_state_dict(state)
            net.eval()


def select_epoch(history: list[dict[str, float]], cfg: AnonConfig, n_subjects: int) -> int | None:
    """The epoch :func:`train_gan` keeps for a history of validation records (one per epoch, in
    order, all eligible), replaying :class:`EpochSelector` with early stopping."""
    sel = EpochSelector(cfg, n_subjects)
    for epoch, rec in enumerate(history):
        sel.update(epoch, rec)
        if sel.stop:
            break
    return sel.best_epoch
