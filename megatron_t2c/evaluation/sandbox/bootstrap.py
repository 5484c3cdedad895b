"""Entry point of a worker process: ``python -I <this file> --worker LIMITS`` runs :func:`.worker.main`.

The worker must not import megatron_t2c (nor anything outside the standard library): with ``-I`` it sees
neither the checkout nor ``PYTHONPATH``, and programs inherit its modules.  So this script loads its own
directory as a package under a private name (``t2c_sandbox``) through importlib, without touching
``sys.path``; the modules it reaches import only the standard library and each other (relatively).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys

PACKAGE = "t2c_sandbox"


def load_worker():
    """This directory as the package ``t2c_sandbox``, and its ``worker`` module."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    return importlib.import_module(PACKAGE + ".worker")


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    load_worker().main(json.loads(sys.argv[2]))
