"""redis-py's asyncio client, loaded when it is used rather than by ``import redis``.

``import redis`` (redis-py 8) runs ``from redis import asyncio``, which imports the whole
asyncio client (its connection, cluster, sentinel and keyspace-notification modules) whatever
the program uses. A process that knows it may not need it (the ``rvlm`` command: only
``apply --async`` and the async API do) calls :func:`defer_redis_asyncio` before anything
imports redis: ``redis.asyncio`` is then a module whose ``__init__`` runs on the first
attribute asked of it (``redis.asyncio.Redis``, ``from redis.asyncio import Redis``). Its
submodules import as usual (``redis.asyncio.cluster``, ``from redis.asyncio import client``,
or the observability module the sync client itself imports), since the package's
``__path__`` is set from the start.

This changes nothing a program sees except when the code of ``redis/asyncio/__init__.py``
runs; once redis is imported it is a no-op.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import pkgutil
import sys
import threading
from types import ModuleType
from typing import Any

PACKAGE = "redis.asyncio"


def defer_redis_asyncio() -> bool:
    """Make ``redis.asyncio`` load on first use; False (nothing done) when redis is already
    imported or its asyncio package cannot be found."""
    if "redis" in sys.modules or PACKAGE in sys.modules:
        return False
    parent = importlib.util.find_spec("redis")  # finds the package without running it
    if parent is None or not parent.submodule_search_locations:
        return False
    spec = importlib.machinery.PathFinder.find_spec(PACKAGE,
                                                    list(parent.submodule_search_locations))
    if spec is None or spec.loader is None:
        return False
    module = importlib.util.module_from_spec(spec)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    lock = threading.RLock()

    def load(name: str) -> Any:
        if name in submodules:  # ``from redis.asyncio import client``: that module only
            return importlib.import_module(f"{PACKAGE}.{name}")
        with lock:
            if "__getattr__" in module.__dict__:
                del module.__dict__["__getattr__"]
                assert spec.loader is not None
                spec.loader.exec_module(module)
        return ModuleType.__getattribute__(module, name)

    module.__getattr__ = load  # type: ignore[method-assign]
    sys.modules[PACKAGE] = module
    return True


__all__ = ["defer_redis_asyncio"]
