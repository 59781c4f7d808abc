"""CPython's test_concurrent_futures process-pool tests against shoal.Executor, spawn start method."""

from _cpython_futures import install

install(globals(), "spawn")
