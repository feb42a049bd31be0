"""Mistakes the stubs must catch (test_stubs.py expects one error per marked line)."""
import torch

import libprune

model = torch.nn.Linear(2, 2)
libprune.prune(model, torch.randn(1, 2), ratio="half")  # error: ratio
libprune.prune(model, torch.randn(1, 2), ignored=["fc"])  # error: ignored
libprune.Schedule("agp", target=0.5)  # error: target
n: str = libprune.count_ops(model, torch.randn(1, 2)).macs  # error: macs
