"""kdscene: feature-based knowledge distillation for scene recognition."""

__version__ = "0.1.0"
