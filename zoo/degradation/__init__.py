"""The degradation lab: the paper's CIFAR-style plain and residual networks trained side by side."""
