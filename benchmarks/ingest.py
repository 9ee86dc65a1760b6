"""A dataset several times Ray's object store streamed through one epoch of raylm training.

    python benchmarks/ingest.py [--size 1.5GB] [--object-store 256MB] [--stream-memory 0.25] [--data DIR] [--batch-size 128]
        [--modality image|audio|text] [--image-size 64] [--image-format png|bmp] [--synth-workers 1] [--trace F --plot P]
        [--repeats 5] [--timeline]

Writes (or reuses) a learnable synthetic set of ``--size`` in parquet shards (``raylm data synth``:
64x64 PNGs by default, 10 classes; ``--image-size 512 --image-format bmp`` for sets larger than RAM,
``--modality audio|text`` for WAV clips or sentences), starts Ray with its object store capped at
``--object-store``, and trains raylm's seed model of that modality for one epoch on 1 Ray Train
worker (1 CPU) while Ray Data reads and decodes the shards on the other CPU(s):
``data.materialize=false``, ``data.check=false``, shard order shuffled, validation from its own
shards. Meanwhile every Ray process (this driver and all its descendants: GCS, raylet, Data and
Train workers) has its RSS sampled with psutil; ``--trace`` appends each sample (with the bytes
those processes have read and, every 5 s, the store's spilled bytes) and ``--plot`` draws them
(benchmarks/ingest_plot.py).

Baseline (images): the same model, batch size, optimizer and thread count (1) on an in-memory tensor
holding ``--slice`` of the training rows, decoded up front (``ingest_baseline.py``): a warm-up epoch and
``--repeats`` timed ones in a fresh process pinned to each CPU in turn (the machine's vCPUs differ in
speed: ``_in_memory``), before the streamed epoch and again after it (once Ray's processes have exited);
the baseline is the median of those timed epochs (``in_memory_spread``: their max / min;
``in_memory_by_cpu``: each CPU's median, beside ``trainer_share_by_cpu``, where the streamed trainer ran).

Prints one JSON line: streamed samples/s and its ratio to the in-memory feed, over the whole epoch
(``streamed_over_in_memory``: the pipeline's start included) and from the first batch on
(``..._after_first_batch``: the epoch less the trainer's wait for its first batch); the trainer's wait on
its next batch (seconds and share of the epoch, ``data_wait_*``); the summed RSS of
all processes at 10 % of the epoch, its peak after that and their ratio; each process's peak; the
object store's spilled / restored bytes; and whether the issue's goals were met (peak RSS <= 1.2x
its 10 % value; streaming >= 0.9x in-memory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class RssSampler(threading.Thread):
    """RSS of this process and all its descendants every ``interval`` seconds (and PSS, which counts
    shared object-store pages once, every ``pss_every``-th time, carried between), until stopped;
    each process's CPU seconds (:func:`cpu_during`); each sample also appended to ``trace``
    with the bytes those processes have read so far (``read()`` calls, page cache included: the
    stream's throughput; kept for processes that have exited) and, every ``store_every`` samples
    while Ray is up, the object store's spilled bytes."""

    def __init__(self, interval: float = 1.0, trace: Path | None = None, store_every: int = 5, pss_every: int = 5):
        super().__init__(daemon=True)
        self.interval, self.trace, self.samples, self.peaks = interval, trace, [], {}
        self.pss_every, self._pss = pss_every, {}  # pid -> its PSS at the last full sweep
        self.store_every, self._read = store_every, {}
        # pid -> [(time, user + system CPU seconds)], and the name of the last task it ran (IDLE skipped)
        self.cpu: dict[int, list[tuple[float, float]]] = {}
        self.cpu_names: dict[int, str] = {}
        self.created: dict[int, float] = {}
        self.trainer_cpus: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        self.cpu_s = 0.0  # this thread's own CPU: the sampling's cost, which the in-memory baseline does not pay
        names: dict[int, str] = {}
        while not self._stop_event.is_set():
            sweep_started = time.thread_time()
            # PSS (smaps_rollup) and the process titles every pss_every-th sweep only: a sweep with them cost
            # ~60 ms of CPU for 20 Ray processes, one with RSS alone (statm) under 1 ms; the streamed run's
            # two cores paid it and the in-memory baseline did not (issue 31).
            full = len(self.samples) % self.pss_every == 0
            rss = pss = count = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    memory = proc.memory_full_info() if full else proc.memory_info()
                    if full or proc.pid not in names:
                        names[proc.pid] = "driver" if proc is me else Path(proc.cmdline()[0] if proc.cmdline() else proc.name()).name
                    name = names[proc.pid]
                except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                    continue
                if full:
                    self._pss[proc.pid] = memory.pss
                rss, pss, count = rss + memory.rss, pss + self._pss.get(proc.pid, memory.rss), count + 1
                peak = self.peaks.get(proc.pid, ("", 0))[1]
                self.peaks[proc.pid] = (name[:40], max(peak, memory.rss))  # the name of its latest task
                with contextlib.suppress(psutil.Error):
                    self._read[proc.pid] = proc.io_counters().read_chars
                    times = proc.cpu_times()
                    self.cpu.setdefault(proc.pid, []).append((time.time(), times.user + times.system))
                    if name.startswith("ray::RayTrainWorker"):  # which CPU the trainer ran on last (the baseline is per CPU)
                        self.trainer_cpus.append((time.time(), proc.cpu_num()))
                    self.created.setdefault(proc.pid, proc.create_time())
                    if name != "ray::IDLE" or proc.pid not in self.cpu_names:
                        self.cpu_names[proc.pid] = name[:40]
            self.samples.append((time.time(), rss, pss))
            if self.trace is not None:
                record = {"time": time.time(), "rss": rss, "pss": pss, "processes": count,
                          "read_bytes": sum(self._read.values())}
                if len(self.samples) % self.store_every == 0:
                    with contextlib.suppress(Exception):  # Ray not up yet, or going down
                        record["spilled_bytes"] = _store_stats()["spilled_bytes"]
                with open(self.trace, "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.cpu_s += time.thread_time() - sweep_started
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _store_stats() -> dict[str, int]:
    """Object-store spill/restore counters of the connected cluster (Ray's memory-summary source)."""
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    if not ray.is_initialized():
        raise RuntimeError("Ray is not running")
    stats = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address)).store_stats
    return {"spilled_bytes": int(stats.spilled_bytes_total), "restored_bytes": int(stats.restored_bytes_total),
            "store_used_bytes": int(stats.object_store_bytes_used)}


_MODELS = {"image": "seed_cnn", "audio": "seed_conv1d", "text": "bert_tiny"}  # raylm data synth's models


def _start_ray(tries: int = 10, **init_kwargs) -> None:
    """raylm's embedded Ray, started again when it times out during startup: Ray waits 30 s (fixed)
    for its raylet to register, which a raylet at nice 19 on a loaded shared machine can miss. The
    processes a failed start left behind (this process's new descendants) are ended first."""
    import psutil
    import ray

    from raylm.runtime import ensure_ray

    me = psutil.Process()
    for attempt in range(1, tries + 1):
        before = {p.pid for p in me.children(recursive=True)}
        try:
            ensure_ray(**init_kwargs)
            return
        except Exception as err:
            if "timed out during startup" not in str(err) or attempt == tries:
                raise
            print(f"[ingest] Ray start {attempt} timed out (load {os.getloadavg()[0]:.0f}); again", file=sys.stderr)
            ray.shutdown()
            left = [p for p in me.children(recursive=True) if p.pid not in before]
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(left, timeout=30)


def _in_memory_slice(manifest: dict, fraction: float, size: int, out: Path) -> int:
    """The first ``fraction`` of the training rows, decoded as raylm decodes them, as an npz for plain_loop.py."""
    import pyarrow.parquet as pq

    from raylm.data.images import decode_image

    labels = manifest["labels"]
    wanted = int(manifest["splits"]["train"]["rows"] * fraction)
    images, ids = [], []
    for shard in sorted(Path(manifest["splits"]["train"]["path"]).glob("*.parquet")):
        table = pq.read_table(shard)
        for data, label in zip(table.column("image").to_pylist(), table.column("label").to_pylist()):
            images.append(decode_image(data, size))
            ids.append(labels.index(label))
        if len(ids) >= wanted:
            break
    np.savez(out, image=np.stack(images[:wanted]), label=np.asarray(ids[:wanted], np.int64), num_classes=len(labels))
    return wanted


def _in_memory(npz: Path, args) -> dict[str, list[float]]:
    """The in-memory feed's samples/s (and per CPU-second) over ``--repeats`` timed epochs after a warm-up
    one, in a fresh process with the trainer's thread count (benchmarks/ingest_baseline.py), once pinned
    to each CPU this process may use (``samples_per_s`` holds them all, ``by_cpu`` each CPU's).

    Why pinned: the development machine's two vCPUs can run the same loop at different speeds (stop 41,
    ``taskset -c 0`` / ``-c 1`` alternated three times: 2,809-3,287 against 3,033-3,981 samples/s; twenty
    minutes later the first pinned run here had them the other way round, 3,136 and 2,982), and a
    single-threaded process mostly stays on the CPU it starts on: an unpinned baseline was one CPU's speed
    or the other's by chance (2,600 in one process and 4,000 in the next, minutes apart), while the streamed
    trainer moves between them (60/40 in two runs). Each CPU's epochs, in equal numbers, are the mix."""
    cmd = [sys.executable, "benchmarks/ingest_baseline.py", "--data", str(npz), "--repeats", str(args.repeats),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    merged: dict = {"samples_per_s": [], "samples_per_cpu_s": [], "by_cpu": {}}
    for cpu in sorted(os.sched_getaffinity(0)):
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True,
                             preexec_fn=lambda cpu=cpu: os.sched_setaffinity(0, {cpu})).stdout
        side = json.loads(out.strip().splitlines()[-1])
        merged["samples_per_s"] += side["samples_per_s"]
        merged["samples_per_cpu_s"] += side["samples_per_cpu_s"]
        merged["by_cpu"][str(cpu)] = side["samples_per_s"]
        merged["threads"] = side["threads"]
    return merged


def _wait_for_descendants(timeout: float) -> int:
    """Waits until this process's descendants (an embedded Ray's processes) have exited, at most ``timeout``
    seconds; returns how many were still alive then."""
    import psutil

    _, alive = psutil.wait_procs(psutil.Process().children(recursive=True), timeout=timeout)
    return len(alive)


def cpu_during(sampler: RssSampler, begin: float, end: float) -> dict[str, float]:
    """CPU seconds (user + system) each kind of process spent between ``begin`` and ``end`` (wall clock),
    summed by the name of the last task it ran: the trainer, the read+decode workers, the split
    coordinator, Ray's own processes (raylet, GCS) and this driver. Sampled once a second, so each
    figure is good to about a second's CPU at either end."""
    spent: dict[str, float] = {}
    for pid, series in sampler.cpu.items():
        before = [c for t, c in series if t <= begin]
        until = [c for t, c in series if t <= end]
        if not until:
            continue
        start = before[-1] if before else (0.0 if sampler.created.get(pid, 0) >= begin else series[0][1])
        name = sampler.cpu_names.get(pid, "?")
        spent[name] = spent.get(name, 0.0) + max(until[-1] - start, 0.0)
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def _shares(values: list[int]) -> dict[str, float]:
    return {str(v): round(values.count(v) / len(values), 2) for v in sorted(set(values))}


def _flatness(samples: list[tuple], begin: float, seconds: float, column: int) -> tuple[int, int]:
    """(the summed memory at 10 % of the epoch, its peak from there to the epoch's end)."""
    at_10 = min(samples, key=lambda s: abs(s[0] - (begin + 0.1 * seconds)))[column]
    during = [s[column] for s in samples if begin + 0.1 * seconds <= s[0] <= begin + seconds]
    return at_10, max(during, default=at_10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1.5GB", help="synthetic set on disk, train + validation")
    parser.add_argument("--object-store", default="256MB", help="Ray's object store cap")
    parser.add_argument("--data", default=None, help="where the set lives (default /tmp/raylm-ingest/image-<size>)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--slice", type=float, default=0.05, help="fraction of the training rows in the in-memory baseline")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed in-memory epochs over the slice before and after the streamed epoch (the baseline is their median)")
    parser.add_argument("--modality", choices=sorted(_MODELS), default="image",
                        help="image (default); audio (WAV -> MFCC) or text (tokenizer): no in-memory baseline")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray Train workers sharing the one training CPU (the split: data.stream_memory with several)")
    parser.add_argument("--block-mib", type=int, default=8, help="data.block_mib (0 = Ray's default, 128 MiB)")
    parser.add_argument("--stream-memory", type=float, default=None,
                        help="data.stream_memory: share of the object store (<= 1) or MiB (> 1); default: raylm's")
    parser.add_argument("--prefetch-batches", type=int, default=None,
                        help="data.prefetch_batches: batches the trainer's iterator prepares ahead; default: raylm's")
    parser.add_argument("--trace", default=None, help="append every memory sample to this JSONL file as it is taken")
    parser.add_argument("--image-size", type=int, default=64, help="side of the synthetic images (raylm data synth)")
    parser.add_argument("--image-format", choices=["png", "bmp"], default="png", help="their encoding (raylm data synth)")
    parser.add_argument("--synth-workers", type=int, default=1, help="processes writing the set, if not there yet")
    parser.add_argument("--ray-start-tries", type=int, default=10,
                        help="Ray starts tried when its raylet misses Ray's fixed 30 s registration wait (a loaded machine)")
    parser.add_argument("--timeline", action="store_true",
                        help="add Ray's task events around the epoch's start (benchmarks/ingest_timeline.py): the first-batch wait")
    parser.add_argument("--plot", default=None, help="draw the --trace's RSS, spill and read throughput into this PNG/SVG")
    args = parser.parse_args()

    from pydantic import ByteSize, TypeAdapter

    from raylm.data.synth import SynthSpec, synthesize, train_overrides

    size, store = (int(TypeAdapter(ByteSize).validate_python(v)) for v in (args.size, args.object_store))
    suffix = "" if (args.image_size, args.image_format) == (64, "png") else f"-{args.image_size}{args.image_format}"
    data_dir = Path(args.data or f"/tmp/raylm-ingest/{args.modality}-{args.size}{suffix if args.modality == 'image' else ''}")
    started = time.time()
    spec = SynthSpec(args.modality, size, image_size=args.image_size, image_format=args.image_format)
    manifest = synthesize(spec, data_dir, workers=args.synth_workers)  # as `raylm data synth` (reused when there)
    synth_s = time.time() - started

    with tempfile.TemporaryDirectory(prefix="raylm-ingest-") as tmp:
        npz = Path(tmp) / "slice.npz"
        with_baseline = args.modality == "image" and args.slice > 0  # --slice 0: no baseline
        slice_rows = _in_memory_slice(manifest, args.slice, 32, npz) if with_baseline else 0
        in_memory = [_in_memory(npz, args)] if with_baseline else []

        import ray

        from raylm.config import load_config
        from raylm.data.shards import prefetch_batches
        from raylm.train import fit

        sampler = RssSampler(trace=Path(args.trace) if args.trace else None)
        sampler.start()
        _start_ray(args.ray_start_tries, num_cpus=args.num_cpus, object_store_memory=store, configure_logging=False)
        cfg = load_config(None, [
            f"model.name={_MODELS[args.modality]}", *train_overrides(manifest), "train.epochs=1", f"train.batch_size={args.batch_size}",
            f"train.lr={args.lr}", f"train.num_workers={args.workers}", f"train.cpus_per_worker={1 / args.workers:g}",
            f"train.storage_path={tmp}/runs",
            "train.log_every_n_steps=1000000", "data.materialize=false", f"data.cache_dir={tmp}/cache", f"data.block_mib={args.block_mib}",
            *([f"data.stream_memory={args.stream_memory}"] if args.stream_memory is not None else []),
            *([f"data.prefetch_batches={args.prefetch_batches}"] if args.prefetch_batches is not None else []),
        ])
        outcome = fit(cfg)
        store_stats = _store_stats()
        if args.timeline:
            from ingest_timeline import pipeline_start  # benchmarks/ is on sys.path when this runs as a script

            try:  # a diagnosis: the epoch's figures are printed without it
                timeline = pipeline_start(outcome.metrics["train_started"])
            except Exception as err:  # noqa: BLE001 - Ray's state API unreachable, or its answer cut short
                timeline = {"error": repr(err)}
        sampler.stop()
        ray.shutdown()
        # Ray's processes (raylet, GCS, workers) exit after shutdown() returns: the timed epochs after the
        # streamed one start without them beside. (They were slower than those before it in every run of stop
        # 38; with 0 processes left they still were in 4 of 5 runs of stop 40, so that is not why.)
        left_after_shutdown = _wait_for_descendants(timeout=60)
        if with_baseline:
            in_memory.append(_in_memory(npz, args))

    metrics = outcome.metrics
    begin, seconds = metrics["train_started"], metrics["train_seconds"]
    rss_10, peak_after = _flatness(sampler.samples, begin, seconds, 1)
    pss_10, pss_peak = _flatness(sampler.samples, begin, seconds, 2)
    # The median of every timed in-memory epoch, before and after: one 1 s epoch moved 1.5x between runs.
    in_memory_rates = [v for side in in_memory for v in side["samples_per_s"]]
    baseline = float(np.median(in_memory_rates)) if in_memory_rates else None
    streamed = metrics["train_samples_per_s"]  # over the whole epoch: the pipeline's start included
    first_wait = metrics.get("data_wait_first_batch_s", 0.0)
    # From the first batch on: the same rows over the epoch less the wait for its first batch.
    streamed_steady = streamed * seconds / max(seconds - first_wait, 1e-9)
    mib = 2**20
    cpu = cpu_during(sampler, begin, begin + seconds)
    rows_k = metrics["train_samples_per_s"] * seconds / 1000
    result = {
        "benchmark": "ingest",
        "data_bytes": manifest["bytes"],
        "modality": args.modality,
        "train_workers": args.workers,
        "image": f"{args.image_size}x{args.image_size} {args.image_format}" if args.modality == "image" else None,
        "epoch_started": begin,
        "object_store_bytes": store,
        "data_over_store": round(manifest["bytes"] / store, 2),
        "train_rows": manifest["splits"]["train"]["rows"],
        "shards": manifest["splits"]["train"]["shards"],
        "synth_seconds": round(synth_s, 1),
        "epoch_seconds": round(seconds, 1),
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "streamed_samples_per_s": round(streamed, 1),
        "in_memory_samples_per_s": round(baseline, 1) if baseline else None,  # the median of the epochs below
        "in_memory_epochs_before_after": [side["samples_per_s"] for side in in_memory],
        "in_memory_per_cpu_s_before_after": [side["samples_per_cpu_s"] for side in in_memory],
        "in_memory_spread": round(max(in_memory_rates) / min(in_memory_rates), 3) if in_memory_rates else None,
        # each CPU's median over both sides, and the share of the epoch's samples the trainer was last seen on each
        "in_memory_by_cpu": {cpu: round(float(np.median([v for side in in_memory for v in side["by_cpu"].get(cpu, [])])), 1)
                             for cpu in (in_memory[0]["by_cpu"] if in_memory else {})},
        "trainer_share_by_cpu": _shares([c for t, c in sampler.trainer_cpus if begin <= t <= begin + seconds]),
        "in_memory_rows": slice_rows,
        "processes_alive_at_after_baseline": left_after_shutdown,  # Ray's, waited for up to 60 s after shutdown
        # like with like: the streamed trainer's torch threads and the in-memory loop's
        "torch_threads_streamed_in_memory": [metrics.get("torch_threads"), *(side.get("threads") for side in in_memory[:1])],
        "block_mib": args.block_mib,
        "prefetch_batches": prefetch_batches(cfg),
        "stream_memory": cfg.data.stream_memory if "stream_memory" in type(cfg.data).model_fields else None,
        "data_wait_s": round(metrics["data_wait_s"], 2) if "data_wait_s" in metrics else None,
        "data_wait_fraction": round(metrics["data_wait_fraction"], 3) if "data_wait_fraction" in metrics else None,
        "data_wait_first_batch_s": round(metrics["data_wait_first_batch_s"], 2) if "data_wait_first_batch_s" in metrics else None,
        "data_wait_by_tenth_s": metrics.get("data_wait_by_tenth_s"),  # the waits per tenth of the epoch's steps
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "streamed_over_in_memory": round(streamed / baseline, 3) if baseline else None,
        "streamed_samples_per_s_after_first_batch": round(streamed_steady, 1),
        "streamed_over_in_memory_after_first_batch": round(streamed_steady / baseline, 3) if baseline else None,
        # CPU seconds per 1,000 training samples over the epoch, by process (the last task each ran), and
        # the share of the machine's CPUs (--num-cpus) all of them used: where the second core went.
        "cpu_s_per_1000_samples": {name: round(v / rows_k, 3) for name, v in cpu.items() if v >= 0.05},
        "sampler_cpu_s": round(sampler.cpu_s, 2),
        "cpu_busy_share": round(sum(cpu.values()) / (seconds * (os.cpu_count() or 1)), 3),
        "rss_total_mib_at_10pct": round(rss_10 / mib, 1),
        "rss_total_mib_peak_after_10pct": round(peak_after / mib, 1),
        "rss_peak_over_10pct": round(peak_after / rss_10, 3),
        "pss_total_mib_at_10pct": round(pss_10 / mib, 1),
        "pss_total_mib_peak_after_10pct": round(pss_peak / mib, 1),
        "pss_peak_over_10pct": round(pss_peak / pss_10, 3),
        # [seconds from the epoch's start, summed RSS MiB, summed PSS MiB], about 40 points
        "memory_mib_over_time": [[round(t - begin, 1), round(r / mib), round(p / mib)]
                                 for t, r, p in sampler.samples[:: max(1, len(sampler.samples) // 40)]],
        "rss_peak_mib_per_process": {f"{pid} {name}": round(peak / mib)
                                     for pid, (name, peak) in sorted(sampler.peaks.items(), key=lambda kv: -kv[1][1])[:12]},
        **store_stats,
        "spilled_over_data": round(store_stats["spilled_bytes"] / manifest["bytes"], 4),
        "goal_spill_5pct": store_stats["spilled_bytes"] <= 0.05 * manifest["bytes"],
        "goal_rss_flat": peak_after <= 1.2 * rss_10,
        "goal_streaming_0_9x": streamed >= 0.9 * baseline if baseline else None,  # whole epoch
    }
    if args.timeline:
        result["pipeline_start"] = timeline
    print(json.dumps(result))
    if args.plot and args.trace:
        from ingest_plot import plot_trace  # benchmarks/ is on sys.path when this runs as a script

        plot_trace(Path(args.trace), result, Path(args.plot))


if __name__ == "__main__":
    main()
