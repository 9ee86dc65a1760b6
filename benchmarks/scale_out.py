"""Scale-out on Ray's fake_multinode autoscaler (tests/helpers/fake_cluster.py): a 1-CPU head and
0..2 worker nodes of 2 CPUs, all on this machine.

    nice -n 19 python benchmarks/scale_out.py [--epochs 3] [--per-class 150]

Two `raylm train` runs (the real CLI, a driver of its own) of the same job, 2 data-parallel
workers on the `digits` demo set, each starting from 0 worker nodes up:
  * ``2_nodes``: ``train.cpus_per_worker=2``, so each worker needs a whole worker node;
  * ``1_node``: ``train.cpus_per_worker=1``, both workers on one worker node.
For each: seconds from submit to the autoscaler's first new node, to all nodes up, to the first
training step (the first epoch's start, from the checkpoint's history); worker nodes over time
(sampled every second); throughput (samples/s, epochs after the first); bytes the run wrote
under its run directory; and, after the run, seconds until the cluster is back at 0 worker nodes.
Prints one JSON line per run and a summary line with the 2-vs-1 throughput ratio from the same
run.

``--storage s3`` runs the README's cluster command instead, as a user would on a cluster with object
storage: ``ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/train.py
--config jobs/configs/image.yaml train.storage_path=s3://<bucket>/runs`` against a real S3 API (moto's
server, tests/helpers/s3_server.py), with no shared disk declared, and adds the bytes the run wrote
to the bucket against the bytes of run state left on the local disk (the job's cwd, the scratch and
the home runs folder; the artifact cache is counted apart). All "nodes" share this machine's cores: the ratio says what the orchestration costs and
whether the work spreads, not what real extra machines would add.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.fake_cluster import FakeCluster, wait_for  # noqa: E402
from tests.helpers.s3_server import S3Server  # noqa: E402


class NodeSampler(threading.Thread):
    """Worker nodes alive, every second, as (seconds since ``t0``, count)."""

    def __init__(self, t0: float) -> None:
        super().__init__(daemon=True)
        self.t0, self.samples, self.stop = t0, [], threading.Event()

    def run(self) -> None:
        import ray

        while not self.stop.wait(1.0):
            alive = sum(1 for n in ray.nodes() if n.get("Alive")) - 1
            if not self.samples or self.samples[-1][1] != alive:
                self.samples.append((round(time.time() - self.t0, 1), alive))

    def first(self, at_least: int) -> float | None:
        return next((t for t, n in self.samples if n >= at_least), None)


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_case(cluster: FakeCluster, name: str, cpus_per_worker: int, nodes: int, args, root: Path) -> dict:
    import ray

    from raylm.train.checkpoint import read_meta

    wait_for(lambda: sum(1 for n in ray.nodes() if n.get("Alive")) == 1, 300, "0 worker nodes before the run")
    job = [f"train.name={name}", f"data.samples_per_class={args.per_class}", f"train.epochs={args.epochs}",
           "train.num_workers=2", f"train.cpus_per_worker={cpus_per_worker}"]
    t0 = time.time()
    sampler = NodeSampler(t0)
    sampler.start()
    if args.storage == "s3":
        storage = f"s3://{args.bucket}/runs"
        env = cluster.client_env() | {"RAY_ADDRESS": cluster.dashboard}
        # The README's cluster command, unchanged but for the address and the storage path.
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", cluster.dashboard,
               "--working-dir", ".", "--runtime-env", "jobs/runtime_env.yaml", "--", "python", "jobs/train.py",
               "--config", "jobs/configs/image.yaml", f"train.storage_path={storage}", *job]
        run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    else:
        storage = root / "runs"
        env = cluster.client_env() | {"PYTHONPATH": str(ROOT), "RAYLM_AUTOSCALING_CONFIG": str(cluster.config_file)}
        cmd = [sys.executable, "-m", "raylm.cli", "train", "--config", str(ROOT / "jobs/configs/image.yaml"),
               f"train.storage_path={storage}", "train.storage_shared=true", f"data.cache_dir={root / 'cache'}", *job]
        run = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=1800)
    ended = time.time()
    if run.returncode != 0 or "{\n" not in run.stdout:
        raise RuntimeError(f"{name}: the run failed\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    outcome = json.loads(run.stdout[run.stdout.index("{\n"):run.stdout.rindex("}") + 1])
    history = _history(outcome["checkpoint"])
    wait_for(lambda: sampler.samples and sampler.samples[-1][1] == 0, 600, "scale-down to 0 worker nodes")
    down = next(t for t, n in reversed(sampler.samples) if n == 0)
    sampler.stop.set()
    sampler.join(timeout=5)
    later = history[1:] or history
    return {
        "case": name, "worker_nodes": nodes, "train_workers": 2, "cpus_per_worker": cpus_per_worker,
        "submit_to_first_node_s": sampler.first(1), "submit_to_all_nodes_s": sampler.first(nodes),
        "submit_to_first_step_s": round(history[0]["train_started"] - t0, 1),
        "run_s": round(ended - t0, 1), "end_to_0_workers_s": round(down - (ended - t0), 1),
        "samples_per_s": round(sum(h["train_samples_per_s"] for h in later) / len(later), 1),
        "val_accuracy": round(outcome["metrics"]["val_accuracy"], 3),
        **(_s3_bytes(args, name) if args.storage == "s3" else {"run_dir_bytes": _bytes_under(storage / name)}),
        "waiting_line": next((line for line in run.stdout.splitlines() if line.startswith("waiting for")), None),
        "worker_nodes_over_time": sampler.samples, "loadavg": os.getloadavg(),
    }


def _history(checkpoint: str) -> list[dict]:
    from raylm.storage import StoragePath

    return StoragePath.of(checkpoint).join("raylm.json").read_json()["history"]


def _s3_bytes(args, name: str) -> dict:
    """What the run keeps in the bucket, and what it left on this machine's disk: a URI run keeps
    its state in storage; the local scratch is removed and only the content-keyed cache stays."""
    stored = args.s3.objects(args.bucket, f"runs/{name}/")
    home = Path.home()
    left = [ROOT / "s3:", home / "raylm_runs" / name, ROOT / "runs" / name]
    return {"bucket_run_bytes": sum(stored.values()), "bucket_run_objects": len(stored),
            "bucket_demo_cache_bytes": sum(args.s3.objects(args.bucket, "runs/_cache/").values()),
            "local_run_state_bytes": sum(_bytes_under(p) if p.is_dir() else 0 for p in left)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--storage", choices=("shared", "s3"), default="shared",
                        help="shared: raylm train on a local path declared shared; s3: the README's ray job submit "
                             "command with train.storage_path on a local S3 API")
    args = parser.parse_args()
    if args.storage == "s3":
        # Before the cluster starts: its nodes, job drivers and workers inherit the endpoint and keys.
        args.s3 = S3Server().start()
        os.environ.update(args.s3.env())
        args.bucket = "raylm-scale-out"
        args.s3.client().create_bucket(Bucket=args.bucket)
    try:
        _run(args)
    finally:
        if args.storage == "s3":
            args.s3.stop()


def _run(args) -> None:
    with FakeCluster() as cluster, tempfile.TemporaryDirectory(prefix="rl_scale") as tmp:
        print(json.dumps({"event": "cluster_up", "head_start_s": cluster.start_seconds, "loadavg": os.getloadavg()}),
              flush=True)
        # Before Ray is imported: it reads its auth mode once.
        os.environ.update({k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")})
        import ray

        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        rows = {}
        try:
            for name, cpus, nodes in (("2_nodes", 2, 2), ("1_node", 1, 1)):
                rows[name] = run_case(cluster, name, cpus, nodes, args, Path(tmp))
                print(json.dumps(rows[name]), flush=True)
        finally:
            # Before the cluster stops: a driver still connected then is ended by Ray's C++ client
            # (no GCS within 60 s) before Python can print why a run failed.
            ray.shutdown()
    print(json.dumps({"event": "summary",
                      "throughput_2_vs_1_nodes": round(rows["2_nodes"]["samples_per_s"] / rows["1_node"]["samples_per_s"], 2),
                      "loadavg": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
