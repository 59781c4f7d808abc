"""CPython's 31 Pool tests against shoal.Pool with the forkserver start method."""

from _cpython_harness import install

install(globals(), "forkserver")
