"""CPython's test_concurrent_futures process-pool tests against shoal.Executor, fork start method."""

from _cpython_futures import install

install(globals(), "fork")
