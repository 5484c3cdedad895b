"""The execution sandbox for generated programs: one module per concern.

Harness side: ``pool`` (ExecutionPool, the workers' handles), ``config`` (SandboxConfig).  Worker side,
standard library only (a worker loads this directory itself, see ``bootstrap``): ``worker`` (the
zygote), ``child`` (a program's process), ``seccomp``, ``limits``, ``guards`` (in-process, no
boundary), ``verdicts``, ``wire``, ``libc``.  This file imports nothing: the worker runs it under a private package name.
"""
