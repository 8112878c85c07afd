"""The daemon's lifecycle: wiring sources, monitors and storage; checkpoints; shutdown."""
