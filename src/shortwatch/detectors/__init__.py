"""Segmentation, per-step and per-cycle features, and the online failure detectors."""
