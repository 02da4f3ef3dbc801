"""Lightning callbacks that act on training from outside the losses (schedules, pictures)."""

from kdscene.callbacks.attention_maps import AttentionMapLogger
from kdscene.callbacks.warmup import LossWeightWarmup, warmup_factor

__all__ = ["AttentionMapLogger", "LossWeightWarmup", "warmup_factor"]
