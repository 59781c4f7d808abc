"""CPython's test_concurrent_futures process-pool tests against shoal.Executor, forkserver start method."""

from _cpython_futures import install

install(globals(), "forkserver")
