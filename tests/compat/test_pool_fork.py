"""CPython's 31 Pool tests against shoal.Pool with the fork start method."""

from _cpython_harness import install

install(globals(), "fork")
