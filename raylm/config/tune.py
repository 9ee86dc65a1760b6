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

    @model_validator(mode="before")
    @classmethod
    def _two_bounds(cls, data: Any) -> Any:
        # A range of one value was "tune.space.train.lr.uniform.1: Field required".
        for kind in ("uniform", "loguniform", "randint"):
            value = data.get(kind) if isinstance(data, dict) else None
            if value is not None and (not isinstance(value, (list, tuple)) or len(value) != 2):
                raise ValueError(f"{kind}: needs [low, high], got {value!r}")
        return data

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
    scheduler: Literal["fifo", "asha", "pbt", "pb2"] = Field(
        "fifo", description="asha: stop weak trials early on val_accuracy; pbt / pb2: Population Based Training "
                            "(PB2: its GP-bandit explore), a population whose augmentation and lr learn a schedule (docs/pbt.md)")
    perturbation_interval: int = Field(1, ge=1, description="pbt/pb2: epochs between a trial's exploit/explore steps")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="pbt/pb2: the bottom fraction copies the top fraction")
    resample_probability: float = Field(0.25, ge=0, le=1, description="pbt: chance a mutated value is drawn anew "
                                                                      "from tune.space instead of scaled by 0.8/1.2")
    explore: Literal["scale", "pba"] = Field(
        "scale", description="pbt: how a mutation moves a value. scale: Ray's PBT (x0.8 or x1.2); pba: Population "
                             "Based Augmentation's (Ho et al. 2019): augment.* values start at the low end of their "
                             "range and step 0-3 tenths of it up or down, other keys scale; either way "
                             "resample_probability draws a value anew")
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
    max_trial_epochs: int | None = Field(
        None, ge=1, description="fifo/asha, random search: sample trials until they have trained this many epochs in "
                                "all (trial-epochs; a trial past the budget stops there), e.g. a PBT sweep's "
                                "num_samples x epochs for a search at equal cost; tune.num_samples caps the trials")
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


# What a population may change inside a running trial: an exploit copies a donor's weights and
# optimizer state into the trial, so the model, the data and the epoch count must stay the same.
MUTABLE_PREFIXES = ("augment.", "train.lr", "train.weight_decay", "train.batch_size", "compress.")
POPULATION_SCHEDULERS = ("pbt", "pb2")


def check_population(cfg: Any) -> None:
    """``tune.scheduler: pbt|pb2`` refusals, in config validation (so before Ray starts), naming the key.
    Skipped when ``tune.space`` is empty: a trial's own config (and the pipeline's retrain) carries the
    sweep's scheduler with an emptied space; the sweep itself refuses an empty space (check_space)."""
    tc = cfg.tune
    if tc.space:
        _check_trial_epoch_budget(cfg)
    if tc.explore != "scale" and tc.space:
        if tc.scheduler != "pbt":
            raise ValueError(f"tune.explore: {tc.explore} is how PBT mutates a trial's values; it needs "
                             f"tune.scheduler=pbt (not {tc.scheduler})")
        if not any(path.startswith("augment.") and dim.kind in ("uniform", "randint") for path, dim in tc.space.items()):
            raise ValueError(f"tune.explore: {tc.explore} starts and steps augment.* values, and tune.space has no "
                             "augment.* key with a range (uniform or randint)")
    if tc.scheduler not in POPULATION_SCHEDULERS or not tc.space:
        return
    name = tc.scheduler
    for path, dim in tc.space.items():
        if not any(path == p or path.startswith(p if p.endswith(".") else p + ".") for p in MUTABLE_PREFIXES):
            raise ValueError(f"tune.space.{path}: tune.scheduler={name} copies a donor trial's weights into others "
                             f"mid-training, so {path} must be the same for the whole population (mutable: "
                             f"{', '.join(p + '*' if p.endswith('.') else p for p in MUTABLE_PREFIXES)})")
        if name == "pb2" and dim.kind not in ("uniform", "loguniform", "randint"):
            raise ValueError(f"tune.space.{path}: tune.scheduler=pb2 takes bounds (uniform, loguniform, randint), not {dim.kind}")
    mutable = [p for p, d in tc.space.items() if d.kind != "grid"]
    if not mutable:
        raise ValueError(f"tune.space: tune.scheduler={name} needs at least one mutable key with a distribution "
                         "(uniform, loguniform, randint, choice; grid values are never mutated), e.g. "
                         "augment.image.rotate_p: {uniform: [0, 1]}")
    if tc.perturbation_interval >= cfg.train.epochs:  # none happens at a trial's last epoch (nothing would follow)
        longer = "longer than" if tc.perturbation_interval > cfg.train.epochs else "as long as"
        raise ValueError(f"tune.perturbation_interval: {tc.perturbation_interval} epochs is {longer} train.epochs="
                         f"{cfg.train.epochs}: no trial would ever be perturbed (none is at a trial's last epoch; "
                         "the sweep would be a random search)")
    if tc.search != "random":
        raise ValueError(f"tune.search: {tc.search} proposes whole trials; tune.scheduler={name} evolves its population "
                         "itself (use tune.search=random)")
    if cfg.model.backend != "torch":
        raise ValueError(f"model.backend: {cfg.model.backend} trials cannot checkpoint and restore mid-sweep; "
                         f"tune.scheduler={name} needs model.backend=torch")
    if "://" in str(cfg.train.storage_path) and not str(cfg.train.storage_path).startswith("file://"):
        raise ValueError(f"train.storage_path: tune.scheduler={name} hands checkpoints between trials on local "
                         "storage (or a shared mount) only, not object storage yet")
    if cfg.train.num_workers != 1 or cfg.train.use_gpu is True:
        raise ValueError(f"train.num_workers: tune.scheduler={name} runs trials that train in their own process "
                         "(one CPU worker: train.num_workers=1, train.use_gpu false/auto); multi-worker trials "
                         "cannot hand a checkpoint to Tune mid-sweep yet")


def _check_trial_epoch_budget(cfg: Any) -> None:
    """``tune.max_trial_epochs`` refusals (raylm/tune/budget.py): the budget stops trials and samples
    more, which only Tune's random generator under fifo/asha takes part in."""
    tc = cfg.tune
    if tc.max_trial_epochs is None:
        return
    if tc.scheduler in POPULATION_SCHEDULERS:
        raise ValueError(f"tune.max_trial_epochs: tune.scheduler={tc.scheduler} trains every trial of its population "
                         f"to the end (tune.num_samples x train.epochs trial-epochs); set the budget on the "
                         "fixed-policy search (fifo or asha) instead")
    if tc.search != "random":
        raise ValueError(f"tune.max_trial_epochs: needs tune.search=random (not {tc.search}): the budget decides "
                         "when the random generator samples another trial")
    most = tc.num_samples * cfg.train.epochs
    if tc.max_trial_epochs > most:
        raise ValueError(f"tune.max_trial_epochs: {tc.max_trial_epochs} is more than tune.num_samples x train.epochs = "
                         f"{tc.num_samples} x {cfg.train.epochs} = {most} could ever train; raise tune.num_samples "
                         "(it caps the trials a budgeted search samples)")
