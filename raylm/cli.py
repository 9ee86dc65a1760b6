"""``raylm <verb>``: the same calls the scripts in jobs/ make, from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from raylm.config import ConfigError, load_config
from raylm.errors import RaylmError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (see jobs/configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=3e-4")


def _console(args: argparse.Namespace, run_dir: Path, *, log_dir: Path | None = None):
    """raylm's console; Ray's stream goes to ``<run>/logs/`` (or ``log_dir``) unless ``-v``."""
    from raylm.runtime import send_logs_to

    return send_logs_to(log_dir or run_dir / "logs", verbose=args.verbose)


def _name_log(args: argparse.Namespace, out, log_dir) -> None:
    """The one line that says where Ray's own lines went (stderr: stdout stays the verb's answer).
    ``log_dir`` is a local Path or the run's StoragePath (a URI run's logs are committed there at its end)."""
    from raylm.runtime import RAY_LOG

    if not args.verbose:
        out.note(f"Ray's logs: {log_dir / RAY_LOG} (-v to show them)")


def load_run_config(args: argparse.Namespace):
    """The verb's config, validated, and the files it names that only this driver reads (``augment.schedule``)
    checked: all before Ray starts."""
    from raylm.data.schedule import check_schedule
    from raylm.hf_sources import check_hub_sources

    from raylm.data.check import check_layout
    from raylm.tracking.runs import check_server

    cfg = load_config(args.config, args.overrides)
    check_layout(cfg)
    check_schedule(cfg)
    check_hub_sources(cfg)
    check_server(cfg)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from raylm.runtime import load_torch_first

    cfg = load_run_config(args)  # validated before Ray starts
    load_torch_first(cfg.model.backend)
    from raylm.storage import run_workspace

    # URI storage: logs and records in a local scratch of the run, committed to storage at the end.
    with run_workspace(cfg.run_location) as run_dir:
        return _train(args, cfg, run_dir)


def _train(args: argparse.Namespace, cfg, run_dir: Path) -> int:
    from raylm.capacity import check_run_paths
    from raylm.console import watch_training
    from raylm.report.runs import run_status
    from raylm.runtime import ensure_ray
    from raylm.train import fit

    out = _console(args, run_dir)
    out.line(f"raylm train  {cfg.run_location}")
    _name_log(args, out, cfg.run_location.join("logs"))
    with run_status(run_dir, "train"):
        ensure_ray()
        check_run_paths(cfg)  # node-local paths on a multi-node cluster: refused before any Ray work
        with watch_training(cfg.run_location.join("train"), cfg.train.epochs):
            outcome = fit(cfg)
    out.line(json.dumps({"run_dir": str(outcome.run_dir), "checkpoint": str(outcome.checkpoint),
                         "best_checkpoint": str(outcome.best_checkpoint), "metrics": outcome.metrics}, indent=2))
    return 0


# Verbs whose work, once they return 0, is all written and closed (records are atomic files, the run's
# storage committed, its tracking run ended) and that need nothing else of this process: ``entry``
# then ends the Ray it started and leaves without the interpreter's teardown.
EXIT_AT_ONCE = ("train", "serve")


def entry(argv: list[str] | None = None) -> None:
    """``raylm`` as a program (the console script, ``python -m raylm.cli``, and ``jobs/*.py`` with their
    verb: ``entry(["train", *sys.argv[1:]])``, so that a submitted job's log ends with raylm's answer too).

    After ``raylm train`` the interpreter's own teardown (module and thread finalizers, Ray's core
    worker, torch) took 2-9 s after the answer was printed on the shared 2-core machine, more than
    stopping Ray itself (~2 s); after that verb ``ray.shutdown()`` and ``os._exit`` end it instead.
    ``main`` (what tests call in a process that goes on) never exits."""
    argv = sys.argv[1:] if argv is None else list(argv)
    code = main(argv, keep_streams=True)
    if "ray" in sys.modules:
        import ray

        # The Ray this process started (a cluster's driver only disconnects) stops while this process's
        # stdout and stderr still go to the run's ray.log: Ray writes its last forwarded worker lines (the
        # "[repeated 4x across cluster]" summaries of its log deduplicator) as it shuts down, and after
        # the streams came back they reached the console of `raylm tune` and a 2-worker `raylm train`.
        if ray.is_initialized():
            ray.shutdown()
    from raylm.runtime import remove_session_files, restore_streams

    remove_session_files()  # this process's HAProxy files: os._exit below runs no atexit handler
    restore_streams()
    if code == 0 and argv[:1] and argv[0] in EXIT_AT_ONCE:  # the verb is argv[0]: no options come before it
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def cmd_compress(args: argparse.Namespace) -> int:
    from raylm.compress.objectives import compress_checkpoint
    from raylm.compress.pipeline import compress_config, summary_text
    from raylm.runtime import ensure_ray

    from raylm.storage import run_workspace

    cfg = compress_config(args.checkpoint, args.config, args.overrides)  # validated before Ray starts
    # URI storage: logs and the artifact in a local scratch of the run, committed to storage at the end.
    with run_workspace(cfg.run_location) as run_dir:
        out = _console(args, run_dir)
        _name_log(args, out, cfg.run_location.join("logs"))
        ensure_ray()
        report = compress_checkpoint(cfg, args.checkpoint, verbose=False)
    out.line(summary_text(report, cfg.compress.serving_batch_size, cfg.pipeline.max_accuracy_drop))
    artifact = cfg.run_location.join("compress", report.variant)  # where it is now: the bucket's URI, or the local path
    out.line(json.dumps(report.ratios.model_dump(mode="json") | {"artifact": artifact.uri if not artifact.is_local
                                                                  else report.artifact}, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from raylm.serve import build_app, load_serve_config

    cfg = load_serve_config(args.config, args.overrides)
    if args.promote or args.rollback:  # the same command and config, redeployed with the canary promoted / removed
        from raylm.serve.routing import promoted, rolled_back

        before = cfg
        cfg = promoted(cfg) if args.promote else rolled_back(cfg)
        # The routing line below is printed only while a canary or shadow routes: say what changed.
        change = (f"--promote: canary {before.canary.tier} is the default tier now, no canary" if args.promote else
                  f"--rollback: canary {before.canary.tier} removed; every request naming no tier goes to the default")
        said: list[str] = [f"raylm serve: routing: {change}"]
    else:
        said = []
    registered = _registered_tiers(args)  # --model models:/...: downloaded first
    artifacts = list(args.artifact or []) + registered
    if registered:  # a registered tier's version is the registry's (docs/canary.md rule 2), unless serve.versions says
        from raylm.serve.loading import resolve_tiers

        numbers = {name: version for spec in registered for name in resolve_tiers([spec])
                   for version in [Path(spec.partition("=")[2] or spec).name]}
        cfg = cfg.model_copy(update={"versions": numbers | dict(cfg.versions)})
    app = build_app(artifacts, cfg, say=said.append)  # artifacts and config checked before Ray starts
    from ray import serve

    from raylm.config.serve import ingress_of
    from raylm.runtime import check_port_free, cluster_ingress, ensure_ray, started_ray, verb_log_dir, will_start_ray
    from raylm.serve.lifecycle import StopSignals, serve_until_stopped, serving_address

    if will_start_ray():  # this process's own Ray and Serve: the port must be free now (a cluster's Serve holds it)
        check_port_free(cfg.host, cfg.port, "serve.port")

    log_dir = Path(args.log_dir).expanduser() if args.log_dir else verb_log_dir("serve")
    out = _console(args, log_dir, log_dir=log_dir)
    _name_log(args, out, log_dir)
    for line in said:
        out.note(line)
    ensure_ray(ingress=cfg.ingress)
    owns_ray = started_ray()
    # From here on, Ray's SIGTERM handler is replaced by a drain (and, during the deploy, a watch on this Ray).
    signals = None if args.detach else StopSignals(owns_ray=owns_ray, say=out.note)
    if owns_ray:
        out.note(f"raylm serve: ingress {cfg.ingress} ({ingress_of(dict(os.environ))})")
    else:  # a cluster's Serve runs the mode its nodes were started with
        out.note(f"raylm serve: ingress: the cluster runs Serve's {cluster_ingress()} "
                 f"(serve.ingress={cfg.ingress} applies only where raylm starts Ray)")
    serve.start(http_options=cfg.http_options())
    serve.run(app, name=args.name, route_prefix=args.route_prefix, blocking=False)
    host, port = serving_address(cfg)
    if port != cfg.port:
        out.note(f"raylm serve: the cluster's Serve listens on port {port} (serve.port={cfg.port} applies only where "
                 f"Serve starts)")
    out.line(json.dumps({"url": f"http://{host}:{port}{args.route_prefix.rstrip('/')}/predict", "app": args.name}))
    if args.detach:
        return 0
    out.note(f"serving until SIGTERM or Ctrl-C (in-flight requests get serve.graceful_shutdown_s={cfg.graceful_shutdown_s:g})")
    out.line(serve_until_stopped(args.name, cfg, owns_ray=owns_ray, signals=signals))
    return 0


def _registered_tiers(args: argparse.Namespace) -> list[str]:
    """``--model [TIER=]models:/<name>/<version>`` -> ``TIER=<local copy>``: the registered version's files,
    downloaded from the MLflow server (``tracking.mlflow.uri`` from --config/overrides, else
    ``MLFLOW_TRACKING_URI``) into ``.../mlflow/<name>/<version number>``, then served and verified like any
    other artifact directory (the directory's name is the tier's version)."""
    if not args.model:
        if not args.artifact:
            raise ConfigError("--artifact or --model: name at least one artifact directory or registered model version")
        return []
    import yaml

    from raylm.config import merge, parse_overrides
    from raylm.storage import cache_root
    from raylm.tracking import RegistryError, download_version

    tree = (yaml.safe_load(Path(args.config).expanduser().read_text()) or {}) if args.config else {}
    tree = merge(tree, parse_overrides(list(args.overrides or [])))
    uri = ((tree.get("tracking") or {}).get("mlflow") or {}).get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("--model: a models:/ URI needs the MLflow server: tracking.mlflow.uri=... or MLFLOW_TRACKING_URI")
    tiers = []
    for entry in args.model:
        tier, sep, model_uri = ("", "", entry) if entry.startswith("models:/") else entry.partition("=")
        try:
            local = download_version(model_uri, uri, cache_root())
        except RegistryError as err:
            raise ConfigError(str(err)) from None
        tiers.append(f"{tier}={local}" if sep else str(local))
    return tiers


def cmd_tune(args: argparse.Namespace) -> int:
    from raylm.tune import check_space

    if args.resume is None:
        if args.config is None:
            raise ConfigError("--config: needed to start a sweep (or --resume DIR to continue one)")
        cfg = load_run_config(args)
        check_space(cfg)  # bad spaces are rejected before Ray starts
    elif args.overrides or args.config:
        raise ConfigError("--resume: continues a sweep with its own saved config; drop --config and overrides")
    else:
        cfg = None
    from raylm.runtime import load_torch_first

    load_torch_first(cfg.model.backend if cfg is not None else None)
    from raylm.tune.sweep import sweep_dir

    from contextlib import nullcontext

    from raylm.storage import StoragePath, is_uri, public_paths, run_workspace

    if cfg is None and is_uri(str(args.resume)):
        # A sweep in object storage (its run, or its tune/): continued in a scratch workspace filled from the
        # bucket (the saved config, the trials' records), as the pipeline's rerun does; Tune restores its
        # experiment from the bucket. (Was a Path: a local folder named "s3:" and "holds no raylm sweep".)
        location = StoragePath.of(str(args.resume).rstrip("/"))
        location = location.parent if location.name == "tune" else location
        with run_workspace(location) as run_dir:
            args.resume = str(run_dir)
            return _tune(args, None, run_dir, public_paths, location)
    with run_workspace(cfg.run_location) if cfg is not None else nullcontext(sweep_dir(args.resume).parent) as run_dir:
        return _tune(args, cfg, run_dir, public_paths, cfg.run_location if cfg is not None else StoragePath.of(run_dir))


def _tune(args: argparse.Namespace, cfg, run_dir: Path, public_paths, location) -> int:
    """The sweep in ``run_dir`` (a scratch copy with URI storage); ``location``: the run where it is kept,
    which the printed commands name (a scratch path is gone when the command ends)."""
    from raylm.report.runs import run_status
    from raylm.tune import sweep
    from raylm.tune.results import sweep_table

    out = _console(args, run_dir)
    out.line(f"raylm tune  {location}")  # as `raylm train` names its run first
    _name_log(args, out, location.join("logs"))
    with run_status(run_dir, "tune"):
        result = sweep(cfg, resume=args.resume, export=args.export)
    out.line(sweep_table(result.tune_dir))
    summary = {"tune_dir": str(result.tune_dir), "objectives": result.objectives,
               "trials": {s: sum(r["status"] == s for r in result.rows) for s in ("completed", "stopped", "error", "pending")},
               "pareto_front": [r["trial_id"] for r in result.front],
               "best": {k: result.best[k] for k in ("trial_id", "params", "accuracy", "latency_ms", "size_mb")} if result.best else None,
               "files": {k: str(v) for k, v in result.files.items()},
               "exported": {k: str(v) for k, v in result.exported.items()}}
    out.line(json.dumps(public_paths(summary), indent=2, default=str))
    if result.exported:
        tiers = " ".join(f"--artifact {name}={path}" for name, path in public_paths(result.exported).items())
        out.line(f"serve it: raylm serve {tiers}")
    out.line(f"report: raylm report {location}")
    return 0 if result.best is not None else 1


def _try_report(out, run_dir: Path, *, preview: bool) -> Path | None:
    from raylm.report import write_report

    try:
        return write_report(run_dir, preview=preview)
    except Exception as err:  # the run's own outcome stands; `raylm report` can try again
        out.warn(f"report not written ({type(err).__name__}: {err}); retry with: raylm report {run_dir}")
        return None


def cmd_pipeline(args: argparse.Namespace) -> int:
    import ray

    from raylm.pipeline import PipelineError, check_entry, format_summary, run_pipeline
    from raylm.report.runs import run_status

    from raylm.storage import public_paths, run_workspace

    cfg = load_run_config(args)  # validated before Ray starts
    start = check_entry(cfg, args.start, args.stop)  # before the run's directory and status exist
    from raylm.runtime import load_torch_first

    load_torch_first(cfg.model.backend)
    embedded = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    interactive = sys.stdout.isatty()  # before the console takes stdout over
    with run_workspace(cfg.run_location) as run_dir:  # URI storage: a scratch, committed after each stage
        out = _console(args, run_dir)
        out.line(f"raylm pipeline  {cfg.run_location}  (Ray's logs: {cfg.run_location.join('logs')}"
                 f"{'' if args.verbose else ', -v to show them'})")
        try:
            with run_status(run_dir, "pipeline"):
                record = run_pipeline(cfg, start=start, stop=args.stop)
        except PipelineError as err:
            out.error(str(err))
            report = _try_report(out, run_dir, preview=False)  # what the stages that ran did, and why it stopped
            if report is not None:
                out.line(f"report    {public_paths(str(report))}")
            return 1
        report = _try_report(out, run_dir, preview=True)
        _track_report(cfg, report)
        out.close()
        out.line(format_summary(record))
        if report is not None:
            out.line(f"report    {public_paths(str(report))}")
    keep = cfg.pipeline.keep_serving
    if keep == "auto":
        keep = embedded and interactive
    if record.stages.serve is not None and embedded and not keep:
        # The URL printed above answered the smoke request, and stops answering as this process ends.
        served = cfg.run_location.join("compress", cfg.compress.variant or "pipeline")
        out.line(f"serving stopped: the app ran on this process's own Ray, which ends with it (not a terminal, "
                 f"so pipeline.keep_serving=auto did not keep it; pipeline.keep_serving=true keeps it; "
                 f"raylm serve --artifact {served.local_path if served.is_local else served.uri} serves it again)")
    if record.stages.serve is not None and keep:
        # An embedded Ray (and the app on it) ends with this process; a cluster's Serve app outlives it.
        # The stop handlers replace Ray Train's SIGINT handler too (it aborts a training run that has ended).
        from raylm.runtime import started_ray
        from raylm.serve.lifecycle import serve_until_stopped

        out.line(f"serving until SIGTERM or Ctrl-C (in-flight requests get serve.graceful_shutdown_s="
                 f"{cfg.serve.graceful_shutdown_s:g}) ...")
        app = record.stages.serve.app
        out.line(serve_until_stopped(app, cfg.serve, owns_ray=started_ray(), who="raylm pipeline"))
    return 0


def _track_report(cfg, report: Path | None) -> None:
    """Tracking on: the run report and its data report into the pipeline's MLflow run."""
    from raylm.tracking import log_files, run_of

    if report is not None:
        log_files(run_of(cfg), [report, report.parent / "data_report.json"])


def cmd_demo(args: argparse.Namespace) -> int:
    from raylm.demo import run_demo
    from raylm.runtime import verb_log_dir

    log_dir = verb_log_dir("demo")  # three runs: Ray's lines of all three in one file, named once
    out = _console(args, log_dir, log_dir=log_dir)
    _name_log(args, out, log_dir)
    run_demo(storage_path=args.storage_path, epochs=args.epochs, say=out.line)
    return 0


def cmd_augment_preview(args: argparse.Namespace) -> int:
    from raylm.data.check import check_layout

    cfg = load_config(args.config, args.overrides)
    check_layout(cfg)  # before Ray starts
    if args.samples < 1 or args.epochs < 1:
        raise ConfigError(f"--samples and --epochs: at least 1 each, got {args.samples} and {args.epochs}")
    from raylm.data.augment_preview import preview
    from raylm.runtime import ensure_ray, quiet_data_progress, verb_log_dir

    log_dir = verb_log_dir("augment-preview")  # a preview makes no run directory
    # The data check's report (data_report.json) goes beside the preview's logs, not into a run directory
    # made for it under train.storage_path (~/raylm_runs/<name> by default, then listed by `raylm runs`).
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"storage_path": str(log_dir), "name": "preview"})})
    out = _console(args, log_dir, log_dir=log_dir)
    _name_log(args, out, log_dir)
    ensure_ray()
    quiet_data_progress()
    result = preview(cfg, args.out, samples=args.samples, epochs=args.epochs)
    out.line("\n".join(result) if isinstance(result, list) else result)
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """The data check training runs first, alone: prints the report; exit 1 when the data is refused."""
    cfg = load_config(args.config, args.overrides)
    from raylm.data import resolve_source
    from raylm.data.check import DataError, check_data, check_layout, enforce
    from raylm.data.files import detect_format
    from raylm.runtime import ensure_ray, quiet_data_progress, verb_log_dir

    if cfg.data.path is None:
        raise ConfigError("data.path: the data check is for your own data; set data.path=<folder or table>")
    try:  # the wrong kind of path, an empty folder, missing columns: refused (exit 1) before Ray starts
        source, _ = resolve_source(cfg)
        check_layout(cfg)
    except DataError as err:
        print(f"raylm: {err}", file=sys.stderr)
        return 1
    log_dir = verb_log_dir("data-check")  # a check makes no run directory
    out = _console(args, log_dir, log_dir=log_dir)
    _name_log(args, out, log_dir)
    ensure_ray()
    quiet_data_progress()
    try:
        report = check_data(cfg, source, detect_format(source, cfg.data.format), report_dir=None, enforce_policy=False)
    except DataError as err:  # a layout or column error: nothing could be checked
        out.error(str(err))
        return 1
    out.line(json.dumps({k: v for k, v in report.items() if k != "files"}, indent=2, ensure_ascii=False))
    try:
        enforce(report, cfg, None)
    except DataError as err:
        out.error(f"training would refuse this data: {err}")
        return 1
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    """A large learnable synthetic set in parquet shards (raylm/data/synth.py), streamed to disk."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    from raylm.data.synth import SynthSpec, synthesize, train_overrides

    try:
        size, shard = (int(TypeAdapter(ByteSize).validate_python(v)) for v in (args.size, args.shard_size))
    except ValidationError:
        raise ConfigError(f"--size/--shard-size: not a size ({args.size!r}, {args.shard_size!r}); e.g. 2GB, 500MiB") from None
    if args.classes < 2 or size <= 0 or shard <= 0 or args.workers < 1:
        raise ConfigError("--classes must be >= 2, --workers >= 1, --size and --shard-size above 0")
    spec = SynthSpec(args.modality, size, num_classes=args.classes, shard_bytes=shard, seed=args.seed,
                     image_size=args.image_size, image_format=args.image_format)
    try:
        manifest = synthesize(spec, args.out, progress=lambda line: print(line, file=sys.stderr, flush=True),
                              workers=args.workers)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    print(json.dumps({k: manifest[k] for k in ("modality", "bytes", "splits")}, indent=2))
    model = {"image": "seed_cnn", "audio": "seed_conv1d", "text": "bert_tiny"}[args.modality]
    print(f"train on it: raylm train --config jobs/configs/{args.modality}.yaml model.name={model} "
          + " ".join(train_overrides(manifest)), file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from raylm.report.collect import kind_of
    from raylm.storage import StoragePath, is_uri, public_paths, run_workspace

    if is_uri(args.run_dir):
        # Rendered in a local scratch of the run, then committed back beside it (report.html).
        location = StoragePath.of(args.run_dir)
        with run_workspace(location) as run_dir:
            if kind_of(run_dir) is None:
                raise ConfigError(f"run: {location} is not a committed raylm run (no pipeline.json, tune/ or train/)")
            return _report(args, run_dir, public_paths)
    run_dir = Path(args.run_dir).expanduser().resolve()
    if not run_dir.is_dir() or kind_of(run_dir) is None:
        raise ConfigError(f"run: {run_dir} is not a raylm run directory (no pipeline.json, tune/ or train/)")
    return _report(args, run_dir, public_paths)


def _report(args: argparse.Namespace, run_dir: Path, public_paths) -> int:
    from raylm.report import write_report
    from raylm.report.collect import PREVIEW_PNG, PREVIEW_TXT

    out = _console(args, run_dir)
    preview = not args.no_preview
    if preview and not (run_dir / PREVIEW_PNG).is_file() and not (run_dir / PREVIEW_TXT).is_file():
        out.note("raylm report: drawing the augmentation preview once (it reads training samples: Ray starts; "
                 "--no-preview skips it)")
    out.line(str(public_paths(str(write_report(run_dir, preview=preview)))))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from raylm.config import TrainConfig
    from raylm.report.runs import format_runs, list_runs
    from raylm.storage import is_uri

    raw = args.storage_path or TrainConfig().storage_path
    if not is_uri(raw) and "=" in raw:  # the other verbs' override spelling, taken as the path
        key, _, value = raw.partition("=")
        if key.strip() not in ("train.storage_path", "storage_path"):
            raise ConfigError(f"raylm runs takes a storage path (raylm runs <dir or URI>), not the override {raw!r}")
        raw = value
    storage = raw if is_uri(raw) else Path(raw).expanduser()
    if not is_uri(raw) and not storage.is_dir():
        raise ConfigError(f"storage_path: {storage} is not a directory")
    runs = list_runs(storage)
    print(format_runs(runs) if runs else f"no raylm runs under {storage}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylm", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    loud = argparse.ArgumentParser(add_help=False)
    loud.add_argument("-v", "--verbose", action="store_true",
                      help="show Ray's own log stream on the console (default: <run>/logs/ray.log for a run; "
                           "verbs that make no run, e.g. serve, data check, augment preview and demo, write it to "
                           "raylm-<verb>-*/ray.log in the temp dir; the path is printed once)")
    train = verbs.add_parser("train", parents=[loud], help="data-parallel training under Ray Train")
    _add_config_args(train)
    train.set_defaults(run=cmd_train)
    comp = verbs.add_parser("compress", parents=[loud], help="prune / quantize a trained checkpoint into a measured ARTIFACT")
    comp.add_argument("--checkpoint", required=True, help="a raylm checkpoint directory (train/checkpoint_*)")
    comp.add_argument("--config", help="YAML config; default: the checkpoint's own config")
    comp.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. compress.quantize.mode=dynamic")
    comp.set_defaults(run=cmd_compress)
    srv = verbs.add_parser("serve", parents=[loud], help="serve ARTIFACT tiers of one model over HTTP with Ray Serve")
    srv.add_argument("--artifact", action="append", metavar="[TIER=]DIR",
                     help="an artifact directory; repeat for tiers (first = default unless serve.default_tier)")
    srv.add_argument("--model", action="append", metavar="[TIER=]models:/NAME/VERSION or models:/NAME@ALIAS",
                     help="a registered MLflow model version (tracking.mlflow.uri or MLFLOW_TRACKING_URI); "
                          "tiers after the --artifact ones")
    srv.add_argument("--config", help="YAML whose 'serve' section is used")
    srv.add_argument("--name", default="raylm", help="Serve application name")
    srv.add_argument("--route-prefix", default="/")
    srv.add_argument("--detach", action="store_true", help="return once deployed (the app keeps running on the cluster)")
    srv.add_argument("--log-dir", help="where Ray's own lines go (default: a new raylm-serve-* directory in the temp dir)")
    switch = srv.add_mutually_exclusive_group()
    switch.add_argument("--promote", action="store_true", help="deploy with serve.canary's tier as the default tier and "
                        "no canary (rerun the command that serves, with --detach against its cluster: docs/canary.md)")
    switch.add_argument("--rollback", action="store_true", help="deploy without serve.canary: the default tier answers all")
    srv.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. serve.max_batch_size=32")
    srv.set_defaults(run=cmd_serve)
    tun = verbs.add_parser("tune", parents=[loud], help="sweep augmentation, training and compression together (Ray Tune)")
    _add_config_args(tun)
    tun.add_argument("--resume", metavar="DIR", help="continue the sweep in this run (or run/tune) directory")
    tun.add_argument("--export", choices=["best", "pareto", "none"], default=None,
                     help="artifacts copied to <run>/compress/: the best trial's, or each Pareto member's (default: tune.export)")
    tun.set_defaults(run=cmd_tune)
    pipe = verbs.add_parser("pipeline", parents=[loud], help="tune -> retrain -> compress -> evaluate -> serve -> smoke request")
    _add_config_args(pipe)
    pipe.add_argument("--from", dest="start", default=None, choices=["tune", "train", "compress", "evaluate", "serve"],
                      help="re-enter at this stage, reusing the earlier stages' outputs (needs train.name=<run>); "
                           "default: where an earlier run of the same config stopped, else tune")
    pipe.add_argument("--to", dest="stop", default="serve", choices=["tune", "train", "compress", "evaluate", "serve"],
                      help="stop after this stage (e.g. evaluate, and serve with a RayService)")
    pipe.set_defaults(run=cmd_pipeline)
    demo = verbs.add_parser("demo", parents=[loud], help="train one model per modality on the bundled demo data")
    demo.add_argument("--storage-path", default="~/raylm_runs")
    demo.add_argument("--epochs", type=int, default=None, help="override every config's train.epochs")
    demo.set_defaults(run=cmd_demo)
    augment = verbs.add_parser("augment", help="look at the augmentation policy (augment section)")
    augment_verbs = augment.add_subparsers(dest="augment_verb", required=True)
    preview = augment_verbs.add_parser("preview", parents=[loud], help="PNG grid: clean samples and their augmented views per epoch")
    _add_config_args(preview)
    preview.add_argument("--out", default="augment_preview.png", help="PNG to write (image and audio)")
    preview.add_argument("--samples", type=int, default=8, help="training samples (columns)")
    preview.add_argument("--epochs", type=int, default=3, help="augmented views (rows), one per epoch")
    preview.set_defaults(run=cmd_augment_preview)
    data = verbs.add_parser("data", help="look at your own data before training")
    data_verbs = data.add_subparsers(dest="data_verb", required=True)
    check = data_verbs.add_parser("check", parents=[loud], help="decode every file or row once and print the data report (no training)")
    _add_config_args(check)
    check.set_defaults(run=cmd_data_check)
    synth = data_verbs.add_parser("synth", help="write a large learnable synthetic dataset as parquet shards (streamed)")
    synth.add_argument("--modality", required=True, choices=["image", "text", "audio"])
    synth.add_argument("--size", required=True, help="bytes on disk, train + validation: 2GB, 500MiB, ...")
    synth.add_argument("--out", required=True, help="directory: <out>/train/, <out>/validation/, <out>/raylm_synth.json")
    synth.add_argument("--shard-size", default="32MiB", help="bytes per shard (default 32MiB)")
    synth.add_argument("--classes", type=int, default=10)
    synth.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--image-format", choices=["png", "bmp"], default="png",
                       help="png (default) or bmp: uncompressed, the least CPU per byte to write and to decode")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=1, help="shards written at once, one process each (default 1)")
    synth.set_defaults(run=cmd_data_synth)
    report = verbs.add_parser("report", parents=[loud], help="write <run>/report.html for a pipeline, sweep or training run")
    report.add_argument("run_dir", metavar="RUN", help="the run directory (<train.storage_path>/<train.name>)")
    report.add_argument("--no-preview", action="store_true", help="skip the augmentation preview (it reads training data)")
    report.set_defaults(run=cmd_report)
    runs = verbs.add_parser("runs", help="a table of the runs under a storage path: stage, state, best accuracy, URL")
    runs.add_argument("storage_path", nargs="?", help="default: train.storage_path's default (~/raylm_runs)")
    runs.set_defaults(run=cmd_runs)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The verb's arguments; ``key=value`` overrides anywhere on the line. argparse hands the positional
    overrides only the run before the first flag: ``raylm train a=1 --config x.yaml b=2`` refused ``b=2`` as
    "unrecognized arguments", naming a valid key as if it were the mistake."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None, *, keep_streams: bool = False) -> int:
    """Run one verb; the exit code. ``keep_streams``: leave stdout and stderr on the run's ray.log when it
    returns (``entry`` stops Ray first, then puts them back)."""
    args = _parse(build_parser(), argv)
    from raylm import console

    try:
        return args.run(args)
    except RaylmError as err:  # a field, file or checkpoint the user can fix: the message names it
        console.current().error(str(err))
        return 2
    except KeyboardInterrupt as err:  # a stage that saved its state says how to continue (raylm.errors.Interrupted)
        console.current().error(str(err) or "interrupted")
        return 130
    except Exception as err:
        if console.current().out is sys.stdout:  # Ray's stream is on the console: so is the traceback
            raise
        import traceback

        traceback.print_exc()  # into <run>/logs/ray.log, where the console's stdout went
        console.current().error(f"{type(err).__name__}: {err}\n  (traceback in the run's logs/ray.log)")
        return 1
    finally:
        console.stop()
        if not keep_streams:
            from raylm.runtime import restore_streams

            restore_streams()


if __name__ == "__main__":
    entry()
