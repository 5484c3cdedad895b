"""The execution sandbox for generated programs (docs/sandbox.md): one module per concern.

Harness side: ``pool`` (ExecutionPool, the workers' handles), ``config`` (SandboxConfig).  Worker side,
standard library only (a worker loads this directory itself, see ``bootstrap``): ``worker`` (the
zygote), ``child`` (a program's process), ``confinement`` (the kernel layers, probed and applied),
``landlock``, ``privileges``, ``seccomp``, ``limits``, ``guards`` (in-process, no boundary), ``verdicts``,
``wire``, ``libc``.  This file imports nothing: the worker runs it under a private package name.
"""
