"""What the installed distribution tells a user, a package index or a
license scanner: the license, where the project lives, and what it runs on.

These read the installed metadata (``importlib.metadata``, what ``pip show``
and PyPI read), so they check what ``maturin`` wrote from pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from urllib.parse import urlparse

import shoal


def _metadata() -> importlib.metadata.PackageMetadata:
    return importlib.metadata.metadata("shoal")


def test_installed_shoal_says_its_license_is_mit_and_carries_the_text() -> None:
    meta = _metadata()
    # PEP 639: an SPDX expression, and the license file beside the metadata.
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    text = importlib.metadata.distribution("shoal").read_text("licenses/LICENSE")
    assert text is not None
    assert text.startswith("MIT License")
    assert "the shoal developers" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_installed_shoal_links_to_its_home_source_and_issues() -> None:
    urls = dict(entry.split(", ", 1) for entry in _metadata().get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues"} <= set(urls)
    for url in urls.values():
        assert urlparse(url).scheme == "https", url
    # One repository behind all of them.
    assert urls["Issues"].startswith(urls["Source"])


def test_installed_shoal_lists_its_python_versions_platform_and_typing() -> None:
    classifiers = set(_metadata().get_all("Classifier") or [])
    versions = {c.rpartition(" :: ")[2] for c in classifiers if c.startswith("Programming Language :: Python :: 3.")}
    # The versions CI tests (make test-all), and no other.
    assert versions == {"3.11", "3.12", "3.13"}
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert "Typing :: Typed" in classifiers
    # The claim Typing :: Typed makes: the marker type checkers look for.
    assert (importlib.resources.files(shoal) / "py.typed").is_file()
    # PEP 639 retires license classifiers once License-Expression is set,
    # and build tools may refuse both together.
    assert not any(c.startswith("License ::") for c in classifiers)
