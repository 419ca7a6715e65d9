"""An adapter package names its extra when one of its packages does not import.

Two modules each adapter imports unguarded (``langchain_text_splitters``; ``llama_index.core``
through ``late_nodes``) gave a bare ``ModuleNotFoundError``; and an installed package that
failed to import (llama-index-vector-stores-qdrant 0.6 with a qdrant-client that dropped a name
it imports) was reported "not installed", which installing the extra again did not change.
Each case runs in a fresh interpreter, with the package hidden from it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_HIDE = """
import sys

class Broken:
    # an installed package whose import fails (its version does not fit another's)
    def find_spec(self, name, path=None, target=None):
        if name == {broken!r}:
            raise ImportError("cannot import name 'IDF_EMBEDDING_MODELS' from 'qdrant_client'")
        if name == {lacking!r}:  # imports a module its installed dependency lacks
            raise ModuleNotFoundError(
                "No module named 'langchain_core.a_module_this_core_lacks'",
                name="langchain_core.a_module_this_core_lacks",
            )
        return None

for name in {hidden!r}:
    sys.modules[name] = None  # not installed
sys.meta_path.insert(0, Broken())
try:
    import {package}
except ImportError as e:
    print(type(e).__name__, e)
"""


def _import(package: str, hidden: tuple[str, ...] = (), broken: str = "", lacking: str = "") -> str:
    code = textwrap.dedent(
        _HIDE.format(package=package, hidden=hidden, broken=broken, lacking=lacking)
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return done.stdout


@pytest.mark.parametrize(
    ("package", "hidden", "named"),
    [
        ("langchain_m3", ("langchain_text_splitters",), "langchain-text-splitters"),
        ("langchain_m3", ("langchain_qdrant",), "langchain-qdrant"),
        ("llamaindex_m3", ("llama_index.core",), "llama-index-core"),
    ],
)
def test_a_package_not_installed_names_the_extra(
    package: str, hidden: tuple[str, ...], named: str
) -> None:
    out = _import(package, hidden)
    extra = "langchain" if package == "langchain_m3" else "llamaindex"
    assert out.startswith(f"MissingExtraError {named} is not installed"), out
    assert f"pip install 'm3kit[{extra}]'" in out


def test_an_installed_package_that_does_not_import_is_not_called_missing() -> None:
    out = _import("llamaindex_m3", broken="llama_index.vector_stores.qdrant")
    assert out.startswith("MissingExtraError llama-index-vector-stores-qdrant is installed"), out
    assert "cannot import name 'IDF_EMBEDDING_MODELS'" in out and "pip install -U" in out


def test_a_module_an_installed_package_lacks_is_not_called_missing() -> None:
    """A dependency's module missing (a version of it older than the package importing it
    needs) is a version mismatch: "not installed" sent the user to install what they had."""
    out = _import("langchain_m3", lacking="langchain_qdrant")
    assert out.startswith("MissingExtraError langchain-qdrant is installed but does not"), out
    assert "a_module_this_core_lacks" in out and "pip install -U" in out
