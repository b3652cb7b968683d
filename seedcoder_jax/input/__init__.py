"""Grain input pipelines over pre-scored corpora: see pipeline.py for the pretraining API."""

from seedcoder_jax.input.pipeline import (InputConfig, InputConfigError, make_dataset,
                                          make_eval_batches, make_iterator)

__all__ = ["InputConfig", "InputConfigError", "make_dataset", "make_eval_batches", "make_iterator"]
