"""Resource limits of a program's process: address space, file size, no core dumps."""

from __future__ import annotations

import resource
import signal


def apply_limits(memory_mb: int, file_size_mb: int) -> None:
    """``RLIMIT_AS`` = ``memory_mb`` MiB and ``RLIMIT_FSIZE`` = ``file_size_mb`` MiB (0: no limit),
    ``RLIMIT_CORE`` = 0; a write past the file-size limit raises ``OSError`` (``SIGXFSZ`` ignored)."""
    if memory_mb > 0:
        nbytes = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    if file_size_mb > 0:
        nbytes = file_size_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
