"""The tiny pipeline run shared by the pipeline tests. Neither swept learning rate is the tiny
config's own (train.lr=0.005): a retrain that ignored the chosen point shows."""

_ARGS = (
    "image", "train.name=pipe", "train.num_workers=1", "train.epochs=1",
    "tune.space={train.lr: {choice: [0.01, 0.007]}, compress.quantize.mode: {choice: [none, dynamic]}}",
    "tune.num_samples=2", "tune.max_concurrent_trials=1", "tune.export=none",
    "tune.objectives=[accuracy, latency_ms]", "compress.latency_runs=3", "compress.latency_warmup=1",
    "pipeline.retrain_epochs=2", "pipeline.retrain_workers=2", "pipeline.choose_within=0.05",
    "serve.replica_cpus=0.25", "serve.max_replicas=1")
