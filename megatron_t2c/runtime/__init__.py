"""Runtime: distributed process groups and megatron-core's CPU compatibility layer."""
