"""CPython's 31 Pool tests against shoal.Pool with the spawn start method."""

from _cpython_harness import install

install(globals(), "spawn")
