"""What a person running raylm reads: one progress line per stage, results, warnings, errors.

Ray, Ray Data, Train, Tune and Serve write a great deal (dataset plans, every worker's reports,
controller messages); ``raylm.runtime.send_logs_to`` moves all of it to ``<run>/logs/ray.log`` and
this console keeps a copy of the real stdout/stderr for raylm's own lines. On a terminal the
progress lines are live rich bars; elsewhere (``ray job logs``, CI, a pipe, ``--verbose``) each
update is one plain line, so nothing depends on cursor movement.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from rich.console import Console as RichConsole
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn

from raylm.records import PipelineRecord, Record
from raylm.records.pipeline import CompressStage, EvaluateStage, ServeStage, SmokeRequest
from raylm.run_files import newest_checkpoint_meta


class Console:
    """raylm's lines on the real stdout/stderr; live bars when ``live`` (a terminal)."""

    def __init__(self, out: TextIO, err: TextIO, *, live: bool) -> None:
        self.out, self.err, self.live = out, err, live
        self._rich = RichConsole(file=out, force_terminal=live, highlight=False, soft_wrap=True)
        self._bars: list[Bar] = []

    def line(self, text: str = "") -> None:
        if self.live:
            self._rich.print(text, markup=False)  # above a live bar, not through it
        else:
            print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A line beside the answer, not part of it (stderr: stdout stays the verb's JSON or table)."""
        self._to_err(text)

    def warn(self, text: str) -> None:
        self._to_err(f"raylm: warning: {text}")

    def error(self, text: str) -> None:
        self._to_err(f"raylm: {text}")

    def _to_err(self, text: str) -> None:
        if self.live and self._bars:
            self._rich.print(Text(text, style="red"))
        else:
            print(text, file=self.err, flush=True)

    def bar(self, label: str, total: int | None, unit: str) -> Bar:
        bar = Bar(self, label, total, unit)
        self._bars.append(bar)
        return bar

    def close(self) -> None:
        """Stop what is still live (a stage that raised), so later lines print below it."""
        for bar in self._bars:
            bar.stop()
        self._bars.clear()


class Bar:
    """One stage's progress: on a terminal a live bar of its own (stages run one after another, so
    each finished bar stays where it was, above the next stage's lines); elsewhere plain lines for
    ``update(..., say=True)``, about ten a stage (see ``_worth_a_line``)."""

    def __init__(self, console: Console, label: str, total: int | None, unit: str) -> None:
        self.console, self.label, self.total, self.unit = console, label, total, unit
        self.started = time.monotonic()
        self.completed = 0
        self._said: tuple[float, int] | None = None  # (when, completed) of the last plain line
        self._progress: Progress | None = None
        if console.live:
            self._progress = Progress(
                TextColumn("{task.description:<9}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), _CountdownColumn(),
                TextColumn("{task.fields[info]}"), console=console._rich,
                redirect_stdout=False, redirect_stderr=False)  # stdout is Ray's log file, not ours to proxy
            self._task = self._progress.add_task(label, total=total, unit=unit, info="", deadline=None)
            self._progress.start()

    def update(self, completed: int | None = None, info: str = "", *, say: bool = False) -> None:
        if completed is not None:
            self.completed = completed
        left = self._seconds_left()
        if self._progress is not None:
            deadline = time.monotonic() + left if left is not None else None
            self._progress.update(self._task, completed=self.completed, info=info, deadline=deadline)
        elif say and self._worth_a_line():
            count = f" {self.completed}/{self.total} {self.unit}" if self.total and self.total > 1 else ""
            self.console.line(f"[{self.label}]{count}  {info}{f'  ETA {_clock(left)}' if left is not None else ''}".rstrip())

    def finish(self, info: str, *, ok: bool = True) -> None:
        elapsed = _clock(time.monotonic() - self.started)
        if self._progress is not None:
            if ok and (self.total is None or not self.completed):
                self._progress.update(self._task, total=max(self.completed, 1), completed=max(self.completed, 1))
            self._progress.update(self._task, info=info, deadline=None)
            self.stop()
        else:
            self.console.line(f"[{self.label}] {'done in' if ok else 'stopped after'} {elapsed}  {info}".rstrip())

    def stop(self) -> None:
        if self._progress is not None and self._progress.live.is_started:
            self._progress.stop_task(self._task)
            self._progress.stop()

    def _worth_a_line(self) -> bool:
        """Piped output (``ray job logs``, CI) is read after the fact: a line per epoch of a 30-epoch
        retrain buries the result table, so print the first update, one per tenth of the total, the
        last, and one at least every 30 s for a stage that moves slowly."""
        now = time.monotonic()
        step = -(-self.total // 10) if self.total else 1
        due = (self._said is None or (self.total is not None and self.completed >= self.total)
               or self.completed >= self._said[1] + step or now - self._said[0] >= 30)
        if due:
            self._said = (now, self.completed)
        return due

    def _seconds_left(self) -> float | None:
        """Time per epoch (trial) so far times those left: Rich's own estimate needs two updates
        within 30 s, and epochs and trials take longer than that."""
        if not self.total or not self.completed or self.completed >= self.total:
            return None
        return (time.monotonic() - self.started) / self.completed * (self.total - self.completed)


class _CountdownColumn(ProgressColumn):
    """The bar's ETA, counting down between updates."""

    def render(self, task) -> Text:
        deadline = task.fields.get("deadline")
        return Text(f"ETA {_clock(max(deadline - time.monotonic(), 0))}" if deadline else "", style="cyan")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


_active: Console | None = None


def current() -> Console:
    """The console the CLI started; for library callers, plain lines on this process's streams."""
    return _active or Console(sys.stdout, sys.stderr, live=False)


def start(out: TextIO, err: TextIO, *, live: bool) -> Console:
    """Make this process's console (``raylm <verb>`` calls it once, before Ray starts)."""
    global _active
    if _active is not None:
        _active.close()
    _active = Console(out, err, live=live)
    handler = logging.StreamHandler(_ConsoleStream(_active))
    # Warnings, and the INFO lines raylm marks for the console (``extra={"console": True}``, e.g. the
    # data.materialize choice); the other INFO lines stay in the log.
    handler.setLevel(logging.INFO)
    handler.addFilter(lambda record: record.levelno >= logging.WARNING or getattr(record, "console", False))
    handler.setFormatter(_ConsoleFormat())
    raylm_log = logging.getLogger("raylm")
    raylm_log.handlers = [h for h in raylm_log.handlers if not getattr(h, "raylm_console", False)]
    handler.raylm_console = True  # type: ignore[attr-defined]
    raylm_log.addHandler(handler)
    if raylm_log.getEffectiveLevel() > logging.INFO:
        # Python's default (WARNING, from the root) dropped the marked INFO lines before any handler saw
        # them: "resuming <run> after epoch N" never reached a `raylm train` console.
        raylm_log.setLevel(logging.INFO)
    # Progress lines from layers below the console (raylm.capacity: waiting for the autoscaler).
    lines = logging.StreamHandler(_ConsoleLines(_active))
    lines.setLevel(logging.INFO)
    lines.setFormatter(logging.Formatter("%(message)s"))
    lines.raylm_console = True  # type: ignore[attr-defined]
    progress_log = logging.getLogger("raylm.progress")
    progress_log.setLevel(logging.INFO)
    progress_log.propagate = False  # not again through raylm's warning handler or the root's
    progress_log.handlers = [h for h in progress_log.handlers if not getattr(h, "raylm_console", False)] + [lines]
    return _active


def stop() -> None:
    """End this process's console (a CLI verb returned): a later verb in the same process (tests, a
    notebook) must not print to the streams this one was given."""
    global _active
    if _active is not None:
        _active.close()
    _active = None
    raylm_log = logging.getLogger("raylm")
    raylm_log.handlers = [h for h in raylm_log.handlers if not getattr(h, "raylm_console", False)]
    progress_log = logging.getLogger("raylm.progress")
    progress_log.handlers = [h for h in progress_log.handlers if not getattr(h, "raylm_console", False)]


class _ConsoleLines:
    """``raylm.progress`` records as the console's own plain lines."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> None:
        if text.strip():
            self.console.line(text.rstrip("\n"))

    def flush(self) -> None:
        pass


class _ConsoleFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.WARNING:  # a marked line: it names itself ("[raylm data] ...")
            return record.getMessage()
        # "raylm: WARNING: [raylm] ..." named raylm twice; a part's tag ("[raylm data] ...") stays.
        return f"raylm: {record.levelname}: {record.getMessage().removeprefix('[raylm] ')}"


class _ConsoleStream:
    """raylm's own warnings (``logging.getLogger("raylm...")``) printed as console lines."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> None:
        if text.strip():
            self.console._to_err(text.rstrip("\n"))

    def flush(self) -> None:
        pass


# ---- what each stage shows -------------------------------------------------------------------

def _fmt(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


@contextmanager
def watch_training(train_dir: Path, total_epochs: int, label: str = "train") -> Iterator[Bar]:
    """An epoch bar for a Ray Train run, read from the checkpoints it persists (the driver has no
    other view of the workers: Train V2 reports reach the controller actor, not this process)."""
    bar = current().bar(label, total_epochs, "epochs")
    stop = threading.Event()
    seen = {"epoch": 0}
    began = time.time()  # an earlier run's checkpoints in the same directory are not this one's progress

    def latest_epoch() -> dict[str, Any] | None:
        return (newest_checkpoint_meta(train_dir, since=began) or {}).get("metrics")

    def poll() -> None:
        while not stop.wait(2.0):
            latest = latest_epoch()
            if latest and latest.get("epoch", 0) > seen["epoch"]:
                seen["epoch"] = latest["epoch"]
                bar.update(latest["epoch"], _epoch_info(latest), say=True)

    thread = threading.Thread(target=poll, name="raylm-train-progress", daemon=True)
    thread.start()
    ended = ""
    try:
        yield bar
    except (KeyboardInterrupt, SystemExit):  # Ray Train's Ctrl-C handler exits with SystemExit
        ended = "interrupted  "
        raise
    except BaseException:
        ended = "failed  "
        raise
    finally:
        stop.set()
        thread.join(timeout=5)
        latest = latest_epoch()
        if latest and latest["epoch"] > seen["epoch"]:
            # The last epochs can land between two polls (a one-worker run in the driver trains the
            # demo's epochs in 0.4 s): the final count gets its line too, as a piped log expects.
            bar.update(latest["epoch"], _epoch_info(latest), say=True)
        bar.finish(ended + (_epoch_info(latest) if latest else ""), ok=not ended)


def _epoch_info(metrics: dict[str, Any]) -> str:
    return (f"val_acc {_fmt(metrics.get('val_accuracy'))}  loss {_fmt(metrics.get('train_loss'))}  "
            f"{_fmt(metrics.get('train_samples_per_s'), '.0f')} samples/s")


@contextmanager
def pipeline_stage(stage: str, cfg, record: PipelineRecord, *,
                   table: Callable[[], str] | None = None) -> Iterator[Callable[[Record], None]]:
    """Around one pipeline stage: its bar (the sweep's own callback, the retrain's epochs, a step
    for compress/evaluate/serve), then one line of what it produced. Yields ``done(result)``.
    ``table``: what the tune stage shows after its bar (the sweep's table; tune is built on this console)."""
    out = current()
    shown: dict[str, Record] = {}

    def done(result: Record) -> None:
        shown["result"] = result

    if stage == "train":
        epochs = cfg.pipeline.retrain_epochs or cfg.train.epochs
        with watch_training(cfg.run_dir / "train", epochs, label="retrain"):
            yield done
        return
    if stage == "tune":
        yield done  # the sweep shows its own bar (raylm.tune.progress); then its table
        shown_table = table() if table is not None else ""
        if shown_table:
            out.line(shown_table)
        return
    bar = out.bar(stage, 1, "step")
    bar.update(0, {"compress": "pruning, quantizing, measuring", "evaluate": "whole validation split, from disk",
                   "serve": "deploying on Ray Serve"}.get(stage, ""), say=True)
    yield done
    bar.update(1)
    bar.finish(_stage_info(stage, shown.get("result")))


def _stage_info(stage: str, result: Record | None) -> str:
    if isinstance(result, (CompressStage, EvaluateStage)):
        return (f"accuracy {_fmt(result.accuracy)}  {_fmt(result.size_mb)} MB  "
                f"p50 {_fmt(result.latency_ms, '.2f')} ms")
    if isinstance(result, ServeStage):
        smoke = result.smoke
        status = f"smoke {smoke.status} ({smoke.predicted!r})" if isinstance(smoke, SmokeRequest) else str(smoke or "")
        return f"{result.url}  {status}"
    return ""


def format_summary(record: PipelineRecord) -> str:
    """The pipeline's final table: what the sweep predicted for the chosen point, and what the pipeline got."""
    st = record.stages
    lines = []
    if st.tune is not None:
        t = st.tune
        lines.append(f"sweep     {t.completed}/{t.trials} trials completed, Pareto front {len(t.pareto_front)}, "
                     f"chosen {t.chosen}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                       for k, v in t.params.items()))
    rows = [("stage", "accuracy", "MB", "p50 ms", "vs dense", "seconds")]
    if st.tune is not None:
        m = st.tune.sweep_measurement
        rows.append(("sweep trial", f"{m.accuracy:.3f}", f"{m.size_mb:.3f}", f"{m.latency_ms:.2f}", "-",
                     str(st.tune.seconds)))
    if st.train is not None:
        # The best kept epoch is what compress starts from (and the dense row below measures): its accuracy,
        # not the last epoch's, when they differ (a user read 0.955 here above the dense model's 1.000).
        best, last = st.train.best, st.train.metrics
        if best is not None and best.epoch is not None and best.epoch != last.epoch and best.val_accuracy is not None:
            rows.append((f"retrain ({last.epoch} ep, best {best.epoch}, dense)", f"{best.val_accuracy:.3f}",
                         "-", "-", "-", str(st.train.seconds)))
        else:
            rows.append((f"retrain ({last.epoch} ep, dense)", f"{last.val_accuracy:.3f}", "-", "-", "-",
                         str(st.train.seconds)))
    if st.compress is not None:
        c = st.compress
        d = c.dense  # the reference every compressed row is judged against
        rows.append((f"dense {d.runtime}", f"{d.accuracy:.3f}", f"{d.size_mb:.3f}", f"{d.latency_ms:.2f}",
                     "1.00x 1.00x", "-"))
        for a in c.attempts[:-1]:
            rows.append((f"  tried {a.recipe}", f"{a.accuracy:.3f}", f"{a.size_mb:.3f}",
                         f"{a.latency_ms:.2f}", f"rejected: {a.why}", "-"))
        versus = f"{-c.accuracy_drop_pts:+.1f}pt {c.size_ratio:.2f}x {c.latency_ratio:.2f}x"
        rows.append((f"compress {c.recipe}", f"{c.accuracy:.3f}", f"{c.size_mb:.3f}", f"{c.latency_ms:.2f}",
                     versus, str(c.seconds)))
    if st.evaluate is not None:
        e = st.evaluate
        rows.append((f"evaluate ({e.samples} val)", f"{e.accuracy:.3f}", f"{e.size_mb:.3f}",
                     f"{e.latency_ms:.2f}", f"{-e.accuracy_drop_pts:+.1f}pt", str(e.seconds)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    if st.serve is not None:
        smoke = st.serve.smoke
        if isinstance(smoke, SmokeRequest):
            smoke = f"{smoke.status}, predicted {smoke.predicted!r} (expected {smoke.expected!r}) in {smoke.latency_ms} ms"
        lines.append(f"serving   {st.serve.url}   smoke request: {smoke}")
    lines.append(f"run dir   {record.run_dir}")
    return "\n".join(lines)
