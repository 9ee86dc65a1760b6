"""``tune`` and ``pipeline``: the sweep's space, search and objectives; the end-to-end pipeline's choices."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raylm.config.section import Section


Objective = Literal["accuracy", "latency_ms", "size_mb"]
# Fixed directions: nobody wants a less accurate, slower or bigger model.
OBJECTIVE_MODES: dict[str, str] = {"accuracy": "max", "latency_ms": "min", "size_mb": "min"}


class SearchDimension(Section):
    """One dimension of a search space; exactly one key, e.g. ``{loguniform: [1e-4, 1e-2]}``."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = Field(None, description="integers in [low, high)")
    choice: list[Any] | None = None
    grid: list[Any] | None = Field(None, description="every value is tried (x tune.num_samples)")

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDimension:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of uniform, loguniform, randint, choice, grid (got {given or 'none'})")
        kind = given[0]
        value = getattr(self, kind)
        if kind in ("choice", "grid"):
            if not value:
                raise ValueError(f"{kind}: needs at least one value")
        else:
            low, high = value
            if not low < high:
                raise ValueError(f"{kind}: low={low} must be below high={high}")
            if kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low={low} must be > 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def values(self) -> Any:
        return getattr(self, self.kind)


class TuneConfig(Section):
    """A sweep: each trial trains (Ray Train), compresses and measures one point of ``space``."""

    space: dict[str, SearchDimension] = Field(
        default_factory=dict, description="dotted config path -> distribution, e.g. train.lr: {loguniform: [1e-4, 1e-2]}")
    search: Literal["random", "optuna"] = Field("random", description="random (and grid dimensions) or Optuna TPE")
    scheduler: Literal["fifo", "asha"] = Field("fifo", description="asha: stop weak trials early on val_accuracy")
    objectives: list[Objective] = Field(
        default_factory=lambda: ["accuracy"],
        description="accuracy (max), latency_ms (min, p50 at compress.serving_batch_size), size_mb (min); "
                    "more than one: multi-objective, the result is a Pareto front")
    num_samples: int = Field(8, ge=1, description="trials (with grid dimensions: repeats of the grid)")
    max_concurrent_trials: int = Field(0, ge=0, description="0: as many as the cluster's CPUs/GPUs fit")
    trial_cpus: float = Field(0.25, gt=0, description="CPUs for each trial's driver (its workers ask for their own); "
                                                      "a one-worker CPU trial trains in its actor and holds train.cpus_per_worker")
    grace_period: int | None = Field(
        None, ge=1, description="asha: epochs every trial gets before it can be stopped; None: rungs at "
                                "(epochs + 1) / reduction_factor^k, the lowest at >= 2 epochs where the budget allows")
    reduction_factor: float = Field(2.0, gt=1, description="asha: keep the best 1/reduction_factor at each rung")
    seed: int | None = Field(0, description="searcher seed (random and Optuna); None: not reproducible")
    export: Literal["best", "pareto", "none"] = Field(
        "best", description="best: the top trial's artifact to <run>/compress/tune-best; pareto: every front member")
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")
    measure_on: str = Field(
        "auto", pattern=r"^[A-Za-z0-9_.:/-]+$",
        description="where every trial's latency is measured, one model at a time, so a sweep's rows compare: "
                    "auto (trial on a one-node cluster that cannot grow, where every place is the same hardware; "
                    "driver otherwise), driver (the sweep driver's node), trial (wherever each trial lands: rows may mix hardware, "
                    "and then the sweep refuses to rank latencies across it) or a custom resource's name "
                    "(e.g. one only the serving node type has)")

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one objective")
        if len(set(value)) != len(value):
            raise ValueError(f"repeats an objective: {value}")
        return value

    @model_validator(mode="after")
    def _searchable(self) -> TuneConfig:
        grid = [path for path, dim in self.space.items() if dim.kind == "grid"]
        if grid and self.search == "optuna":
            raise ValueError(f"tune.space.{grid[0]}: grid dimensions need tune.search=random (Optuna samples; "
                             "use choice)")
        return self


class PipelineConfig(Section):
    """``raylm pipeline``: tune -> retrain the chosen point -> compress -> evaluate -> serve -> smoke request."""

    retrain_epochs: int | None = Field(None, ge=1, description="epochs of the final retrain; default train.epochs")
    retrain_workers: int | None = Field(None, ge=1, description="Ray Train workers of the final retrain; default train.num_workers")
    choose_within: float = Field(
        0.0, ge=0, le=1, description="pick the lowest-latency Pareto member within this much accuracy of the most "
                                     "accurate one (0: the best trial by tune.objectives)")
    max_accuracy_drop: float = Field(
        1.0, ge=0, le=100, description="accuracy guard, in points: the served artifact vs the dense retrained model, "
                                       "on the whole validation split, measured from the exported file")
    prune_epochs: int = Field(3, ge=0, description="a pruning recipe without compress.finetune_epochs: epochs the "
                                                  "retrained model trains around its ramping mask (0: one-shot)")
    recovery_epochs: int = Field(2, ge=0, description="guard missed: epochs of a recovery fine-tune (pruned "
                                                      "recipes) before the next front member is tried")
    serve_over_budget: bool = Field(False, description="serve the chosen recipe even when it misses the guard "
                                                       "or the gain gate (recorded); false: fall back, finally dense")
    keep_serving: bool | Literal["auto"] = Field(
        "auto", description="block after the smoke request; auto: when this process started Ray and has a terminal")
