"""Sources of samples: simulator, cycler export files (followed or replayed)."""
