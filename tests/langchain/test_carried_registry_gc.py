"""The splitter's registries of late-chunked vectors (``_CARRIED``, ``_RETURNED``) and the
garbage collector.

Each chunk ``Document`` has a ``weakref.finalize`` that removes its entries when it is
collected. The cyclic GC runs on any allocation, so it can collect a chunk ``Document`` held in
a reference cycle (a traceback's frames, an object graph) while this very thread holds the
registries' lock, e.g. inside ``_attach`` while splitting the next document: the finalizer
waited for that non-reentrant lock and the thread hung forever.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc, os, threading
    from langchain_core.documents import Document
    from langchain_m3 import splitter as sp


    class Collecting(dict):
        # the cyclic GC may run at any allocation; here it runs at this one, inside the lock
        def setdefault(self, *args):
            gc.collect()
            return super().setdefault(*args)


    def attempt():
        carried = sp.CarriedChunk(None, None)
        gc.disable()
        doc = Document(page_content="chunk", metadata={})
        doc.metadata["me"] = doc  # a cycle: only the cyclic GC frees it
        sp._attach(doc, "cyclic", carried)
        del doc
        sp._CARRIED = Collecting(sp._CARRIED)
        sp._attach(Document(page_content="x", metadata={}), "other", carried)
        sp._CARRIED = dict(sp._CARRIED)
        gc.enable()
        gc.collect()
        assert "cyclic" not in sp._CARRIED, "the collected chunk's entry is left"
        assert "other" not in sp._CARRIED, "the collected chunk's entry is left"
        assert not sp._RETURNED, sp._RETURNED


    errors = []


    def run():
        try:
            attempt()
        except BaseException as exc:
            errors.append(repr(exc))


    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(15)
    if t.is_alive():
        print("hung", flush=True)
        os._exit(3)
    print(errors or "ok", flush=True)
    """
)


def test_a_chunk_collected_while_the_registry_lock_is_held_does_not_hang() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr[-2000:]
