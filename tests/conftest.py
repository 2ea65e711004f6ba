"""Tests run their tiny models on one CPU thread: faster than two for models this
small, and far faster when other processes share the cores (no thread spinning)."""

import torch

torch.set_num_threads(1)
