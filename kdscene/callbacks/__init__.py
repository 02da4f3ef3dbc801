"""Lightning callbacks that act on training from outside the losses (schedules, pictures)."""

from kdscene.callbacks.attention_maps import AttentionMapLogger
from kdscene.callbacks.progress import ProgressLine
from kdscene.callbacks.warmup import LossWeightWarmup, warmup_factor

__all__ = ["AttentionMapLogger", "ProgressLine", "LossWeightWarmup", "warmup_factor"]
