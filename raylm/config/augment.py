"""``augment``: the training-data augmentation policy per modality (train split only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raylm.config.section import Section


class ImageAugmentConfig(Section):
    """OpenCV image policy (train split only). Every op is off at 0: the default is the identity."""

    rotate_p: float = Field(0.0, ge=0, le=1, description="probability of a random rotation")
    max_rotation: float = Field(30.0, ge=0, le=180, description="degrees; angle ~ U(-max, max) (article: 30)")
    crop_p: float = Field(0.0, ge=0, le=1, description="probability of a random resized crop")
    crop_scale_min: float = Field(0.5, gt=0, le=1, description="smallest crop, as a fraction of the area")
    crop_scale_max: float = Field(1.0, gt=0, le=1, description="largest crop, as a fraction of the area")
    hflip_p: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    brightness: float = Field(0.0, ge=0, le=1, description="additive shift ~ U(-b, b) on [0, 1] pixels")
    contrast: float = Field(0.0, ge=0, le=1, description="factor ~ U(1-c, 1+c) around the image mean")
    cutout_p: float = Field(0.0, ge=0, le=1, description="probability of one zeroed square")
    cutout_size: float = Field(0.25, ge=0, le=1, description="cutout side as a fraction of the image side")
    border: Literal["constant", "replicate", "reflect"] = Field(
        "constant", description="what a rotation fills outside the source image: constant (black), replicate "
                                "(the edge pixels: a plain background continues) or reflect")

    @model_validator(mode="after")
    def _crop_range(self) -> ImageAugmentConfig:
        if self.crop_scale_min > self.crop_scale_max:
            raise ValueError(f"crop_scale_min ({self.crop_scale_min}) must be <= crop_scale_max ({self.crop_scale_max})")
        return self


class AudioAugmentConfig(Section):
    """Policy on MFCC frames (after decoding), train split only; off at 0."""

    noise_p: float = Field(0.0, ge=0, le=1, description="probability of additive Gaussian noise")
    snr_db_min: float = Field(10.0, ge=-20, le=100, description="noise SNR range in dB, against the clip's feature power")
    snr_db_max: float = Field(30.0, ge=-20, le=100)
    shift_p: float = Field(0.0, ge=0, le=1, description="probability of a time shift")
    max_shift: float = Field(0.1, ge=0, le=1, description="largest shift as a fraction of the frames")
    time_masks: int = Field(0, ge=0, le=10, description="SpecAugment time masks per clip")
    time_mask_width: float = Field(0.1, ge=0, le=1, description="widest time mask, fraction of the frames")
    freq_masks: int = Field(0, ge=0, le=10, description="SpecAugment coefficient masks per clip")
    freq_mask_width: int = Field(3, ge=0, le=128, description="widest coefficient mask, in coefficients")

    @model_validator(mode="after")
    def _snr_range(self) -> AudioAugmentConfig:
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(f"snr_db_min ({self.snr_db_min}) must be <= snr_db_max ({self.snr_db_max})")
        return self


class TextAugmentConfig(Section):
    """Token-level policy (after tokenizing), train split only; off at 0. Special tokens never change."""

    dropout_p: float = Field(0.0, ge=0, le=1, description="rate of tokens replaced by the unknown token")
    swap_p: float = Field(0.0, ge=0, le=1, description="rate of adjacent token swaps")
    delete_p: float = Field(0.0, ge=0, le=1, description="rate of deleted tokens")


class AugmentConfig(Section):
    """Training-data augmentation; the section of ``task.modality`` is used."""

    image: ImageAugmentConfig = ImageAugmentConfig()
    audio: AudioAugmentConfig = AudioAugmentConfig()
    text: TextAugmentConfig = TextAugmentConfig()
    schedule: str | None = Field(
        None, description="a schedule.json a PBT sweep learned: train follows its augmentation (and train.lr) values "
                          "epoch by epoch, stretched to train.epochs (docs/pbt.md); the fixed values above fill the rest")
