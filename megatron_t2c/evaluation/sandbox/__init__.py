"""The execution sandbox for generated programs."""
