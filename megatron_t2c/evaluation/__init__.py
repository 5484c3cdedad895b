"""Zero-shot evaluation: benchmark problems and the task registry, prompts, generation, sandboxed execution, pass@k."""
