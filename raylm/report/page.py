"""``<run>/report.html``: one self-contained page (inline CSS, figures as data URIs, no scripts,
no fonts, no links out) that opens offline from a laptop or a cluster's shared storage."""

from __future__ import annotations

import json
import shlex
import time
from html import escape
from pathlib import Path
from typing import Any

from raylm.data.modality import MODALITIES
from raylm.records.sweep import with_dense_rows
from raylm.report import plots

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
th{background:#f4f4f4}pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.8rem}img{max-width:100%}
.wide{overflow-x:auto}.muted{color:#777;font-size:.85rem}.good{color:#17703a}.bad{color:#b3261e}
"""


def _num(value: Any, spec: str = ".4g") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return "-" if value is None or value == "" else escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Html) else _num(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table>{head}{body}</table></div>'


class _Html(str):
    """Already-escaped markup for a table cell."""


def _img(uri: str | None, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="{uri}">' if uri else ""


def _p50(measured: dict[str, Any], batch: int) -> float | None:
    return ((measured.get("latency") or {}).get(f"batch_{batch}") or {}).get("p50_ms")


def dense_reference(run: dict[str, Any]) -> dict[str, Any] | None:
    """The dense model of the same training: the pipeline's own record of it when it has one
    (stages.compress.dense), else the dense parent measured in the artifact's report."""
    recorded = (run["stages"].get("compress") or {}).get("dense")
    if isinstance(recorded, dict) and recorded.get("accuracy") is not None:
        return recorded | {"label": f"dense reference ({recorded.get('runtime', 'recorded by the pipeline')})"}
    report = (run["artifact"] or {}).get("report") or {}
    dense, batch = report.get("dense"), ((run["artifact"] or {}).get("recipe") or {}).get("serving_batch_size")
    if not isinstance(dense, dict) or batch is None:
        return None
    return {"accuracy": dense.get("accuracy"), "latency_ms": _p50(dense, batch), "size_mb": (dense.get("file_bytes") or 0) / 1e6,
            "label": "dense parent (torch fp32, artifact report)"}


def _sweep_section(run: dict[str, Any]) -> str:
    sweep = run["sweep"]
    if not sweep:
        return ""
    chosen = (run["stages"].get("tune") or {}).get("chosen") or sweep.get("best")
    front = set(sweep.get("pareto_front") or [])
    evaluate = run["stages"].get("evaluate") or {}
    uri = plots.pareto(run["trials"], front, chosen, dense_reference(run),
                       evaluate if evaluate.get("accuracy") is not None else None)
    params = list((run["trials"][0].get("params") or {})) if run["trials"] else []
    # The trials and their dense models (<trial>-dense): the front and the chosen may be either.
    rows = [[r.get("trial_id"), *((r.get("params") or {}).get(p) for p in params), r.get("status"), r.get("epochs"),
             r.get("accuracy"), r.get("size_mb"), r.get("latency_ms"),
             ("front " if r.get("trial_id") in front else "") + ("chosen" if r.get("trial_id") == chosen else "")]
            for r in with_dense_rows(run["trials"])]
    dense = dense_reference(run)
    if dense:
        rows.append([_Html("<b>dense</b>"), *([""] * len(params)), "", "", dense.get("accuracy"),
                     dense.get("size_mb"), dense.get("latency_ms"), dense.get("label")])
    return ("<h2>Sweep: the Pareto front</h2>" + _img(uri, "Pareto plot") +
            _table(["trial", *(".".join(p.split(".")[-2:]) for p in params), "status", "epochs", "accuracy", "MB",
                    "p50 ms", ""], rows))


def _curves_section(run: dict[str, Any]) -> str:
    statuses = {str(r.get("trial_id")): r.get("status") for r in run["trials"]}
    retrain = (run["retrain"] or {}).get("history")
    uri = plots.curves(run["histories"], statuses, retrain)
    if not uri:
        return ""
    note = "each sweep trial, and the chosen point retrained at full budget" if run["histories"] and retrain else (
        "each sweep trial" if run["histories"] else "the training run")
    return f"<h2>Training curves</h2><p class=muted>{note}</p>" + _img(uri, "training curves")


def _schedule_section(run: dict[str, Any]) -> str:
    schedule = run.get("schedule")
    uri = plots.schedule(schedule) if schedule else None
    if not uri:
        return ""
    exploits = ", ".join(f"epoch {e['epoch']}: {e['from']} -> {e['to']}" for e in schedule.get("exploits") or []) or "none"
    return (f"<h2>Learned schedule ({escape(str(schedule.get('scheduler')))})</h2><p class=muted>the values along trial "
            f"{escape(str(schedule.get('trial_id')))}'s lineage, per epoch; exploits (red): {escape(exploits)}. "
            "augment.schedule replays it (docs/pbt.md).</p>" + _img(uri, "learned schedule"))


def _confusion_section(run: dict[str, Any]) -> str:
    evaluate = run["stages"].get("evaluate") or {}
    uri = plots.confusion(evaluate.get("confusion") or [], evaluate.get("labels") or [])
    if not uri:
        return ""
    return (f"<h2>Confusion matrix</h2><p class=muted>the served artifact, reloaded from disk, on the whole validation "
            f"split ({_num(evaluate.get('samples'))} samples): accuracy {_num(evaluate.get('accuracy'), '.4f')}</p>"
            + _img(uri, "confusion matrix"))


def _preview_section(run: dict[str, Any]) -> str:
    if run["preview_png"] is not None:
        uri = plots.png_uri(run["preview_png"].read_bytes())
        return ("<h2>Augmentation preview</h2><p class=muted>top row: clean training samples; below: the same samples as "
                "the chosen policy augments them in epochs 0, 1, 2</p>" + _img(uri, "augmentation preview"))
    if run["preview_text"]:
        return f"<h2>Augmentation preview</h2><pre>{escape(run['preview_text'])}</pre>"
    return ""


def _latency_ratio(report: dict[str, Any], latency: Any, dense: dict[str, Any]) -> str:
    """The compressed p50 over the dense one as the compression gate decided it: the paired ratio (the
    two models timed in alternation, ``ratios.latency_ratio`` with timing ``paired``) where it was
    measured so; the two p50s' quotient only for an artifact without it. The p50s themselves were
    timed minutes apart, and their quotient once read 0.94x where the paired ratio was 1.02x."""
    ratios = report.get("ratios") or {}
    if isinstance(ratios.get("latency_ratio"), (int, float)) and ratios.get("latency_ratio_timing") == "paired":
        return f"x{ratios['latency_ratio']:.3g} (paired)"
    if not isinstance(latency, (int, float)) or not isinstance(dense.get("latency_ms"), (int, float)) or not dense["latency_ms"]:
        return "-"
    return f"x{latency / dense['latency_ms']:.3g} (timed apart)"


def _certificate_section(run: dict[str, Any]) -> str:
    meta = run["artifact"]
    if not meta:
        return ""
    report, recipe, lineage = meta.get("report") or {}, meta.get("recipe") or {}, meta.get("lineage") or {}
    batch = recipe.get("serving_batch_size") or 1
    compressed, dense = report.get("compressed") or {}, dense_reference(run) or {}
    evaluate = run["stages"].get("evaluate") or {}
    size_mb = (compressed.get("file_bytes") or 0) / 1e6 if compressed else evaluate.get("size_mb")
    latency = _p50(compressed, batch) if compressed else evaluate.get("latency_ms")

    def delta(mine: Any, ref: Any, kind: str) -> str:
        if not isinstance(mine, (int, float)) or not isinstance(ref, (int, float)) or not ref:
            return "-"
        if kind == "acc":
            gap = mine - ref
            return f'<span class="{"good" if gap >= -0.01 else "bad"}">{gap:+.4f}</span>'
        return f"x{mine / ref:.3g}"

    rows = [
        ["accuracy (validation rows of compress)", compressed.get("accuracy"), dense.get("accuracy"),
         _Html(delta(compressed.get("accuracy"), dense.get("accuracy"), "acc"))],
        ["size on disk (MB)", size_mb, dense.get("size_mb"), _Html(delta(size_mb, dense.get("size_mb"), "ratio"))],
        [f"p50 latency (ms, batch {batch})", latency, dense.get("latency_ms"), _Html(_latency_ratio(report, latency, dense))],
    ]
    if evaluate.get("accuracy") is not None:
        rows.append([f"accuracy, whole validation split ({_num(evaluate.get('samples'))})", evaluate["accuracy"], "-", "-"])
    model_file = meta.get("model_file")
    facts = [
        ["artifact", str(run["artifact_dir"])], ["variant", recipe.get("variant")],
        ["recipe", f"prune {((recipe.get('prune') or {}).get('method'))} "
                   f"(sparsity {(recipe.get('prune') or {}).get('sparsity')}), quantize {(recipe.get('quantize') or {}).get('mode')}, "
                   f"export {recipe.get('export')}"],
        ["model file", f"{model_file}  sha256 {(meta.get('files') or {}).get(model_file, '-')}"],
        ["agreement with dense", compressed.get("agreement_with_dense")],
        ["export parity", "passed" if (report.get("parity") or {}).get("passed") else str(report.get("parity") or "-")],
        ["parent checkpoint", lineage.get("parent_checkpoint")], ["parent epoch", lineage.get("parent_epoch")],
        ["data fingerprint", lineage.get("data_fingerprint")], ["config hash", lineage.get("config_hash")],
    ]
    return ("<h2>Certificate of the artifact</h2>" + _table(["measure", "artifact", "dense reference", "vs dense"], rows)
            + f"<p class=muted>dense reference: {escape(str(dense.get('label', 'not recorded')))}</p>"
            + _table([], facts))


def _attempts_section(run: dict[str, Any]) -> str:
    """The candidates the pipeline's accuracy guard and gain gate judged (stages.compress.attempts),
    shown as recorded: one row per attempt, its plain fields as columns."""
    compress = run["stages"].get("compress") or {}
    attempts = [a for a in compress.get("attempts") or [] if isinstance(a, dict)]
    if not attempts:
        return ""
    columns = [k for k in dict.fromkeys(k for a in attempts for k in a)
               if all(not isinstance(a.get(k), (dict, list)) for a in attempts)]
    served = compress.get("served")
    note = f"<p>served: <b>{escape(str(served))}</b></p>" if served is not None and not isinstance(served, (dict, list)) else ""
    return "<h2>Compression candidates</h2>" + note + _table(columns, [[a.get(k) for k in columns] for a in attempts])


def _example_body(modality: str) -> str:
    """A shell-quoted /predict body for the curl example: a file's bytes for byte modalities."""
    record = MODALITIES.get(modality)
    if record is None:
        return "'{}'"
    if record.request_bytes:
        return f'"{{\\"{modality}\\": \\"$(base64 -w0 example{record.extensions[0]})\\"}}"'
    return shlex.quote(json.dumps({modality: record.request_example}))


def _serving_section(run: dict[str, Any]) -> str:
    serve, artifact_dir = run["stages"].get("serve") or {}, run["artifact_dir"]
    if not serve and not artifact_dir:
        return ""
    modality = ((run["artifact"] or {}).get("task") or {}).get("modality", "image")
    url = serve.get("url") or "http://127.0.0.1:8000/predict"
    body = _example_body(modality)
    key = ((run["config"] or {}).get("serve") or {}).get("api_key_env")
    header = f" -H \"x-api-key: ${key}\"" if key else ""
    curl = f"curl -s -X POST {url} -H 'content-type: application/json'{header} -d {body}"
    tier = (run["stages"].get("compress") or {}).get("recipe") or "default"
    serve_cmd = f"raylm serve --artifact {shlex.quote(f'{tier}={artifact_dir}')}" if artifact_dir else ""
    smoke = serve.get("smoke")
    said = (f"smoke request: HTTP {smoke.get('status')}, predicted {smoke.get('predicted')!r} "
            f"(expected {smoke.get('expected')!r}) in {smoke.get('latency_ms')} ms") if isinstance(smoke, dict) else (smoke or "")
    where = f"served at <b>{escape(url)}</b>. {escape(str(said))}" if serve else "not served by this run"
    return (f"<h2>How it is served</h2><p>{where}</p><pre>{escape(curl)}</pre>"
            + (f"<p>serve it with Ray Serve (batching, autoscaling):</p><pre>{escape(serve_cmd)}</pre>" if serve_cmd else ""))


def _stages_section(run: dict[str, Any]) -> str:
    stages = run["stages"]
    if not stages:
        return ""
    # train: the accuracy of the checkpoint the next stages start from (its epoch, "best"), not the last epoch's
    rows = [[name, s.get("seconds"), s.get("accuracy", (s.get("best") or s.get("metrics") or {}).get("val_accuracy")),
             s.get("size_mb"), s.get("latency_ms")] for name, s in stages.items()]
    session = run["session"] or {}
    logs = f"<p class=muted>logs: {escape(str(run['run_dir'] / 'logs'))}; Ray session logs: {escape(str(session.get('logs_dir', '-')))}</p>"
    return "<h2>Stages</h2>" + _table(["stage", "seconds", "accuracy", "MB", "p50 ms"], rows) + logs


def _state_section(run: dict[str, Any]) -> str:
    """How the run's command ended, when it did not finish: failed (with its error) or interrupted. A
    failed run's report otherwise said only that it had nothing to report."""
    status = run.get("status")
    if not isinstance(status, dict):
        return ""
    from raylm.report.runs import run_state

    # A local run's "running" is checked against its pid; a URI run's status is read as written.
    state = run_state(run["run_dir"]) if isinstance(run["run_dir"], Path) else status.get("state", "-")
    if state == "finished":
        return ""
    error = f": {status['error']}" if state == "failed" and status.get("error") else ""
    how = {"interrupted": " (stopped before it ended; rerun its command to continue)",
           "running": " (still running)"}.get(state, "")
    return (f"<p><b>{escape(str(status.get('command', 'run')))} {escape(state)}</b>{escape(how)}"
            f"{escape(error)}</p><p class=muted>logs: {escape(str(run['run_dir']))}/logs</p>")


def render(run: dict[str, Any]) -> str:
    kind = "pipeline" if run["stages"] else "sweep" if run["sweep"] else "training run"
    parts = [_state_section(run), _stages_section(run), _certificate_section(run), _attempts_section(run), _serving_section(run), _sweep_section(run),
             _schedule_section(run), _curves_section(run), _confusion_section(run), _preview_section(run)]
    body = "".join(p for p in parts if p) or "<p>This run has nothing to report yet.</p>"
    if parts[0] and not any(parts[1:]):
        body += "<p>Nothing else to report: no stage of it wrote a result.</p>"
    title = f"raylm {kind} {run['name']}"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
            f"<p class=muted>{escape(str(run['run_dir']))} &middot; written {stamp}</p>{body}</body></html>")

