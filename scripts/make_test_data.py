"""Make the small squad_en sample that the tests ship with (``tests/data/squad_en``).

Reads the full set in ``../shared/data/squad_en`` (beside the checkout) and keeps
:data:`ARTICLES` whole: every paragraph, question, qrel and training row of those articles,
byte for byte (lines are copied, not re-serialised). ``articles.json`` keeps the source
fields and counts of the kept articles. ``longdoc/`` is not sampled (no test reads it).
The output is deterministic (gzip without a timestamp), so re-running gives the same bytes::

    python scripts/make_test_data.py                   # writes tests/data/squad_en
    python scripts/make_test_data.py --check           # exit 1 if the committed copy differs

The data is SQuAD v1.1 (CC BY-SA 4.0); the sample carries a README with the attribution.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "squad_en"
TARGET = REPO / "tests" / "data" / "squad_en"

#: The sampled articles: the eight shortest that give a mix of topics (a01 comes first in
#: the full set, so the sample's first rows equal the full set's first rows).
ARTICLES = ("a01", "a08", "a15", "a17", "a31", "a33", "a38", "a44")

README = """\
# squad_en sample (test data)

A sample of the SQuAD v1.1 retrieval set in `../shared/data/squad_en` (beside the checkout),
shipped so the test suite runs in a plain clone. Made by `scripts/make_test_data.py`; do not
edit by hand.

{articles}
- `corpus.jsonl`: {n_corpus} paragraphs; `queries.jsonl` / `qrels.tsv`: {n_queries} questions;
  `train.jsonl.gz` / `train_ids.jsonl`: {n_train} FlagEmbedding training rows (1 positive + up
  to 7 hard negatives, all from the same article); `articles.json`: the kept articles.
- Same layout and same lines as the full set (see its README for the fields); only the
  selection of articles differs. No `longdoc/` here.

## Source and license

SQuAD v1.1 (Stanford Question Answering Dataset), by Pranav Rajpurkar, Jian Zhang, Konstantin
Lopyrev and Percy Liang: "SQuAD: 100,000+ Questions for Machine Comprehension of Text",
EMNLP 2016. Taken from the official SQuAD explorer,
[rajpurkar/SQuAD-explorer](https://github.com/rajpurkar/SQuAD-explorer) branch gh-pages, commit
`e0c66cfec263165fb3c15cb76a22175e371b71d7`, `explore/1.1/dev/<Article>.html` (the pages of the
articles above: `source_path` and `source_blob` in `articles.json`). Passages are from English
Wikipedia (CC BY-SA).

License: **CC BY-SA 4.0** (https://creativecommons.org/licenses/by-sa/4.0/). Changes: the
dataset was sampled (the articles above) and reformatted (BEIR layout plus FlagEmbedding
training rows with BM25 hard negatives); passages, questions and answers are the dataset's
own. This sample is shared under the same license, CC BY-SA 4.0. Keep this README next to the
files when you copy them.
"""


def _article_of_doc(doc_id: str) -> str:
    return doc_id.rsplit("_p", 1)[0]


def _lines(path: Path) -> list[str]:
    """Non-empty lines with their newline, as bytes-faithful text."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [line if line.endswith("\n") else line + "\n" for line in fh if line.strip()]


def build(source: Path) -> dict[str, bytes]:
    """``{relative path: file bytes}`` of the sample made from the full set in ``source``."""
    keep = set(ARTICLES)
    articles = json.loads((source / "articles.json").read_text(encoding="utf-8"))
    found = {a["_id"] for a in articles}
    if not keep <= found:
        raise ValueError(f"{source / 'articles.json'} lacks articles {sorted(keep - found)}")

    corpus = [
        ln
        for ln in _lines(source / "corpus.jsonl")
        if _article_of_doc(json.loads(ln)["_id"]) in keep
    ]
    queries = [ln for ln in _lines(source / "queries.jsonl") if json.loads(ln)["article"] in keep]
    qids = {json.loads(ln)["_id"] for ln in queries}
    qrels_lines = _lines(source / "qrels.tsv")
    header, body = qrels_lines[0], qrels_lines[1:]
    if not header.startswith("query-id"):
        raise ValueError(f"{source / 'qrels.tsv'}: expected a header line, got {header!r}")
    qrels = [header] + [ln for ln in body if ln.split("\t", 1)[0] in qids]

    train_ids = _lines(source / "train_ids.jsonl")
    with gzip.open(source / "train.jsonl.gz", "rt", encoding="utf-8", newline="") as fh:
        train = [ln if ln.endswith("\n") else ln + "\n" for ln in fh if ln.strip()]
    if len(train) != len(train_ids):
        raise ValueError(f"{source}: {len(train)} training rows but {len(train_ids)} id rows")
    kept = [i for i, ln in enumerate(train_ids) if json.loads(ln)["article"] in keep]

    meta = []
    for a in articles:
        if a["_id"] not in keep:
            continue
        a = dict(a)
        a["queries"] = sum(json.loads(ln)["article"] == a["_id"] for ln in queries)
        a["train_rows"] = sum(json.loads(train_ids[i])["article"] == a["_id"] for i in kept)
        meta.append(a)

    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write("".join(train[i] for i in kept).encode("utf-8"))
    readme = README.format(
        articles=textwrap.fill(
            f"- Articles ({len(meta)}, whole): "
            + "; ".join(f"{a['title']} ({a['_id']})" for a in meta)
            + ".",
            width=95,
            subsequent_indent="  ",
        ),
        n_corpus=len(corpus),
        n_queries=len(queries),
        n_train=len(kept),
    )
    return {
        "README.md": readme.encode("utf-8"),
        "articles.json": (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode("utf-8"),
        "corpus.jsonl": "".join(corpus).encode("utf-8"),
        "queries.jsonl": "".join(queries).encode("utf-8"),
        "qrels.tsv": "".join(qrels).encode("utf-8"),
        "train_ids.jsonl": "".join(train_ids[i] for i in kept).encode("utf-8"),
        "train.jsonl.gz": buf.getvalue(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="the full squad_en folder")
    parser.add_argument("--out", type=Path, default=TARGET)
    parser.add_argument(
        "--check", action="store_true", help="compare with --out instead of writing it"
    )
    args = parser.parse_args(argv)
    if not (args.source / "articles.json").is_file():
        print(
            f"error: the full squad_en set is missing: {args.source} "
            "(the shared data sits beside the checkout as ../shared/data; pass --source)",
            file=sys.stderr,
        )
        return 2
    files = build(args.source)
    if args.check:
        stale = [
            name
            for name, data in files.items()
            if not (args.out / name).is_file() or (args.out / name).read_bytes() != data
        ]
        extra = sorted(
            str(p.relative_to(args.out))
            for p in args.out.rglob("*")
            if p.is_file() and str(p.relative_to(args.out)) not in files
        )
        if stale or extra:
            print(f"{args.out} differs: {stale} regenerate; {extra} not made by the script")
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.out / name).write_bytes(data)
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files)} files, {total / 1e6:.2f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
