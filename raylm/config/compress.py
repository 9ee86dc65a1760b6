"""``compress``: the compression recipe (methods by registered name, see raylm.compress.methods) and its gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raylm.config.section import PlainName, Section


class PruneConfig(Section):
    method: str = Field("none", description="a registered pruner (raylm.compress.methods): none, magnitude, structured")
    sparsity: float = Field(0.5, ge=0, lt=1, description="magnitude: fraction of prunable weights set to zero")
    scope: Literal["global", "layer"] = Field("global", description="magnitude: one threshold for all layers, or per layer")
    structured_ratio: float = Field(0.5, ge=0, lt=1, description="structured: fraction of channels / FFN neurons removed")
    schedule: Literal["oneshot", "gradual"] = Field(
        "gradual", description="gradual: the mask ramps up (cubic, as tfmot's PolynomialDecay) while the fine-tune "
                               "epochs train around it; oneshot: prune once, then fine-tune (if any) with it fixed")


class QuantizeConfig(Section):
    mode: str = Field(
        "none", description="a registered quantizer; ONNX Runtime int8: dynamic (weights int8, activations at run "
                            "time) or static (calibrated QDQ); keras: either means QAT + full-int8 TFLite")
    calibration_samples: int = Field(128, ge=1, description="static: training samples used to calibrate activations")
    per_channel: bool = True
    # ORT's dynamic ConvInteger is ~13x slower than fp32 Conv on the seed CNN (2-core x86, measured),
    # while int8 MatMul is faster and Gather (embeddings) shrinks text models. Convs go int8 with static.
    skip_op_types: list[str] = Field(
        default_factory=lambda: ["Conv"],
        description="dynamic: ONNX op types left in fp32 (ORT's dynamic int8 set minus these); static quantizes all")


class DistillConfig(Section):
    method: str = Field("none", description="a registered distiller: none, or distill (a smaller student trained "
                                            "on the dense model's logits, before pruning and int8)")
    width: float = Field(0.5, gt=0, le=1, description="fraction of the teacher's conv channels (CNN, Conv1D) or FFN "
                                                      "neurons (text) the student keeps, the strongest by L2 norm")
    layers: float = Field(0.5, gt=0, le=1, description="text: fraction of the teacher's encoder layers the student "
                                                       "keeps (evenly spaced, initialised from those layers)")
    temperature: float = Field(4.0, gt=0, description="softens teacher and student logits in the distillation loss")
    hard_weight: float = Field(0.3, ge=0, le=1, description="weight of the cross-entropy on the true labels; the "
                                                            "rest goes to the teacher's softened logits (KL * T^2)")
    epochs: int = Field(8, ge=0, description="epochs the student trains on the training split")
    lr: float | None = Field(None, gt=0, description="default: train.lr")


class CompressConfig(Section):
    variant: PlainName | None = Field(None, description="artifact name under <run_dir>/compress/; default from the recipe")
    vocabulary: Literal["full", "train"] = Field(
        "full", description="text (model.name=hf, ONNX export): train keeps only the embedding rows of the token ids "
                            "the training split uses (and the special tokens); other ids read [UNK] through a lookup "
                            "the exported graph holds, so the tokenizer and serving are unchanged")
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    finetune_epochs: int = Field(0, ge=0, description="epochs of Ray Train fine-tuning after pruning (masks kept)")
    finetune_lr: float | None = Field(None, gt=0, description="default: train.lr / 10")
    export: str = Field(
        "auto", description="a registered exporter (torch: onnx, safetensors; keras: tflite); auto: the backend's (onnx, tflite)")
    parity_atol: float = Field(1e-4, gt=0, description="max |logit difference| allowed between export and in-memory model")
    serving_batch_size: int = Field(16, ge=1, description="the second batch size latency is measured at")
    latency_runs: int = Field(30, ge=1)
    latency_warmup: int = Field(5, ge=0)
    latency_threads: int = Field(1, ge=1, description="intra-op threads for torch and ONNX Runtime alike")
    max_eval_samples: int = Field(0, ge=0, description="0: the whole validation split")
    sparse_storage: bool = Field(
        True, description="store mostly-zero ONNX weights sparse, rebuilt exactly at load: fp32 as sparse "
                          "initializers (values + int32 indices), int8 as a bitmask + kept values "
                          "(model.sparse.safetensors): unstructured sparsity then shrinks the fp32 and int8 file")
    min_size_gain: float = Field(1.5, ge=1, description="gain gate: the artifact counts if it is this many times "
                                                        "smaller than the dense reference ...")
    min_speedup: float = Field(1.2, ge=1, description="... or this many times faster at serving_batch_size")
    gain_tolerance: float = Field(0.1, ge=0, le=1, description="... and costs at most this fraction more on the "
                                                               "other (size or p50) than the dense reference")
