"""``lightning-grok theory``: predictions without training, and without importing Lightning."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from lightning_grok.members import build_member


def predictions(cfg: DictConfig) -> dict:
    """Predictions only, no training: exact t1, t2, every bound with its hypotheses (of seed ``seed``)."""
    member = build_member(OmegaConf.merge(cfg, {"seeds": 1}))
    if member.theory is None:
        return {"exact": None, "bounds": {}, "note": member.theory_note}
    out = member.theory.predictions()
    limit = member.theory.quantities.stability_limit
    out["stability"] = {"lr": cfg.optim.lr, "limit": limit, "stable": cfg.optim.lr < limit}
    return out
