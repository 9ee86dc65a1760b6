"""Sweeps over augmentation, training and compression together (Ray Tune).

    result = sweep(cfg)                  # cfg.tune: space, search, scheduler, objectives
    result.front, result.best            # Pareto front of the compressed models; the top trial
    sweep(resume="~/raylm_runs/<run>")   # continue an interrupted sweep; finished trials stay
"""

from raylm.tune.space import check_space
from raylm.tune.sweep import SweepResult, sweep

__all__ = ["SweepResult", "check_space", "sweep"]
