"""Connecting ``crossent eval --dask`` to a cluster: ``local:N`` or a scheduler's address, reached in bounded time."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os

from dask.utils import parse_timedelta

# No dashboard; the scheduler's small HTTP server (health, metrics) on a free port of 127.0.0.1, not on 8787
# (dashboard_address=None alone still takes 8787, and warns when another cluster holds it).
QUIET_HTTP = {"dashboard_address": "127.0.0.1:0"}
CONNECT_TIMEOUT = "20s"  # to reach a scheduler given by its address, handshake included
MAX_LOCAL_WORKERS = 4 * (os.cpu_count() or 1)  # worker processes of local:N; more than 4 a core never helps


@contextlib.contextmanager
def cluster_client(address: str, *, timeout: str | None = None):
    """A ``distributed.Client`` for ``--dask``: ``local:N`` starts a LocalCluster of N worker processes.

    Any other `address` (``tcp://host:8786``) connects to a running scheduler.  The client is not made the
    default one, and the cluster it started is closed on exit.  A scheduler that cannot be reached within
    `timeout` (default :data:`CONNECT_TIMEOUT`) is one ValueError naming the address.

    Examples:
        >>> with cluster_client("local:0") as client:
        ...     pass
        Traceback (most recent call last):
        ValueError: --dask local:N needs a positive number of workers, got 'local:0'
    """
    from distributed import Client, LocalCluster

    timeout = timeout or CONNECT_TIMEOUT
    if address.startswith("local:"):
        text = address[len("local:"):]
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"--dask local:N needs a positive number of workers, got {address!r}")
        if int(text) > MAX_LOCAL_WORKERS:  # local:100000 would fork processes until the machine gives out
            raise ValueError(f"--dask local:N starts N processes on this machine ({os.cpu_count()} cores): at "
                             f"most {MAX_LOCAL_WORKERS}, got {address!r}")
        with LocalCluster(n_workers=int(text), processes=True, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address=None, scheduler_kwargs=QUIET_HTTP) as cluster, \
                Client(cluster, set_as_default=False) as client:
            yield client
        return
    if "://" not in address and ":" not in address:
        raise ValueError(f"--dask needs a scheduler address (tcp://HOST:PORT) or local:N, got {address!r}")
    _reach_scheduler(address, parse_timedelta(timeout))
    with Client(address, timeout=timeout, set_as_default=False) as client:
        yield client


def _reach_scheduler(address: str, seconds: float) -> None:
    """Connect to `address` and read its handshake within `seconds` in all, or one ValueError naming it.

    ``Client(address)`` alone waits forever on a listener that never answers, and fails with a
    MemoryError traceback on one that answers in another protocol (an HTTP server, the dashboard's port).
    """
    from distributed.comm import connect
    from distributed.security import Security

    tls = Security().get_connection_args("client")  # the TLS settings of Dask's config, as Client uses them

    async def handshake():
        comm = await connect(address, timeout=seconds, **tls)
        await comm.close()

    try:
        # in a thread of its own: asyncio.run refuses to start inside a running loop (a notebook)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, asyncio.wait_for(handshake(), seconds)).result()
    except Exception as exc:  # any failure to reach it is the address's fault, not a crash
        if isinstance(exc, asyncio.TimeoutError):
            why = f"no answer within {seconds:g} s"
        elif isinstance(exc, (OSError, ValueError)):
            why = str(exc)
        else:
            why = f"it does not answer as a Dask scheduler ({type(exc).__name__})"
        raise ValueError(f"--dask: cannot reach a Dask scheduler at {address!r}: {why}") from None




def local_threads(address: str) -> int | None:
    """Kernel threads per task on a ``local:N`` cluster (the cores shared by the N workers), else None.

    Examples:
        >>> local_threads("tcp://127.0.0.1:8786") is None, local_threads("local:1") == (os.cpu_count() or 1)
        (True, True)
    """
    if address.startswith("local:") and address[6:].isdigit() and int(address[6:]) > 0:
        return max(1, (os.cpu_count() or 1) // int(address[6:]))
    return None
