"""MPIRE's three published benchmark workloads, reimplemented and scaled.

research/mpire.md section 3 describes them (after Robert Nishihara's Ray
benchmarks): a numerical one (filters over one large shared image), a
stateful one (per-worker prefix counts over unbalanced documents) and an
expensive initialisation (a model loaded once per worker, then many
predictions). MPIRE's sizes take minutes per trial on 2 cores; the
constants below scale each to a few seconds, keeping its shape. The model
is numpy (a 784-512-10 perceptron) instead of Keras, and its load is a
sleep standing for reading a trained model from disk.

This module holds the data and the task functions; rows_mpire.py says how
each library runs them. Functions taking the state as an argument serve the
WorkerPools (shared_objects, worker_state); the ``*_global`` ones serve the
pools whose per-worker state is a global set by an initializer.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

# -- numerical: MPIRE's is a 5000x5000 image and 10 filters per core -----------
IMAGE_SIDE = 1200  # 11.5 MB of float64
FILTERS_PER_WORKER = 10
STRIDE = 5


def make_image() -> np.ndarray:
    return np.random.default_rng(42).random((IMAGE_SIDE, IMAGE_SIDE))


def make_filters(workers: int) -> list[np.ndarray]:
    rng = np.random.default_rng(42)
    return [rng.normal(size=(4, 4)) for _ in range(FILTERS_PER_WORKER * workers)]


def convolve(image: np.ndarray, filt: np.ndarray) -> np.ndarray:
    """The "valid" 2-D convolution of ``image`` by ``filt``, every STRIDE-th
    row and column kept (MPIRE uses scipy's full convolve2d; the work per
    pixel is the same, and numpy alone keeps scipy out of the bench deps)."""
    fh, fw = filt.shape
    h, w = image.shape[0] - fh + 1, image.shape[1] - fw + 1
    acc = np.zeros((h, w))
    tmp = np.empty((h, w))
    for i in range(fh):
        for j in range(fw):
            np.multiply(image[i : i + h, j : j + w], filt[fh - 1 - i, fw - 1 - j], out=tmp)
            acc += tmp
    return acc[::STRIDE, ::STRIDE]


_image: np.ndarray | None = None


def set_image(image: np.ndarray) -> None:
    global _image
    _image = image


def convolve_global(filt: np.ndarray) -> np.ndarray:
    assert _image is not None
    return convolve(_image, filt)


# -- stateful: MPIRE's is 2000 documents of 15000 or 5000 words ----------------
DOCUMENTS = 150
WORDS_EVEN, WORDS_ODD = 900, 300  # unbalanced on purpose, as MPIRE's
WORD_BYTES = 20
POPULAR = 3  # a prefix is popular if seen more than this many times


def make_documents() -> list[list[bytes]]:
    rng = np.random.default_rng(42)
    docs = []
    for i in range(DOCUMENTS):
        n = WORDS_EVEN if i % 2 == 0 else WORDS_ODD
        blob = rng.bytes(n * WORD_BYTES)
        docs.append([blob[k * WORD_BYTES : (k + 1) * WORD_BYTES] for k in range(n)])
    return docs


class PrefixCount:
    """One worker's state: how often each word prefix was seen."""

    def __init__(self) -> None:
        self.counts: defaultdict[bytes, int] = defaultdict(int)

    def add_document(self, doc: list[bytes]) -> None:
        counts = self.counts
        for word in doc:
            for i in range(1, WORD_BYTES):
                counts[word[:i]] += 1

    def popular(self) -> set[bytes]:
        return {prefix for prefix, n in self.counts.items() if n > POPULAR}


def init_counter(worker_state: dict[str, Any]) -> None:
    worker_state["counter"] = PrefixCount()


def add_document(worker_state: dict[str, Any], doc: list[bytes]) -> None:
    worker_state["counter"].add_document(doc)


def popular(worker_state: dict[str, Any]) -> set[bytes]:
    return worker_state["counter"].popular()


_counter: PrefixCount | None = None
# A barrier of one party per worker, made in the parent before the pool and
# inherited by forked workers: it makes each worker take exactly one of the
# collecting tasks, the initializer pools' stand-in for worker_exit.
collect_barrier: Any = None


def init_counter_global() -> None:
    global _counter
    _counter = PrefixCount()


def add_document_global(doc: list[bytes]) -> None:
    assert _counter is not None
    _counter.add_document(doc)


def popular_global(_: int) -> set[bytes]:
    assert _counter is not None
    collect_barrier.wait()
    return _counter.popular()


# -- expensive init: MPIRE's loads a Keras MNIST model; 50 runs x 10 evals ----
LOAD_SECONDS = 1.0
INPUTS = 1_000
HIDDEN = 512
RUNS = 10
EVALS = 10


class Model:
    """A 784-512-10 perceptron and its test inputs."""

    def __init__(self) -> None:
        time.sleep(LOAD_SECONDS)  # stands for reading a trained model from disk
        rng = np.random.default_rng(7)
        self.w1 = (rng.standard_normal((784, HIDDEN)) * 0.05).astype(np.float32)
        self.w2 = (rng.standard_normal((HIDDEN, 10)) * 0.05).astype(np.float32)
        self.x = rng.random((INPUTS, 784), dtype=np.float32)

    def predict(self, idx: int) -> np.ndarray:
        z = np.maximum(self.x @ self.w1, 0.0) @ self.w2
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True) + idx


def init_model(worker_state: dict[str, Any]) -> None:
    worker_state["model"] = Model()


def evaluate(worker_state: dict[str, Any], idx: int) -> np.ndarray:
    return worker_state["model"].predict(idx)


_model: Model | None = None


def init_model_global() -> None:
    global _model
    _model = Model()


def evaluate_global(idx: int) -> np.ndarray:
    assert _model is not None
    return _model.predict(idx)
