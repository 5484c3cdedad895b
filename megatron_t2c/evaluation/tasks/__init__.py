"""The benchmarks, one module each (HumanEval, MBPP)."""
