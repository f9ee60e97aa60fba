"""Evaluator feedback for generators (MAGIC): preference pairs or rewards -> LoRA fine-tuning, in measured rounds."""

from .loop import FeedbackLoopConfig, FeedbackResult, RoundReport, run_feedback_loop
from .tuning import Example, FeedbackTrainConfig, ensure_lora, train_on_feedback

__all__ = [
    "Example",
    "FeedbackLoopConfig",
    "FeedbackResult",
    "FeedbackTrainConfig",
    "RoundReport",
    "ensure_lora",
    "run_feedback_loop",
    "train_on_feedback",
]
