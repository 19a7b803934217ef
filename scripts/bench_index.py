"""Index build speed: chunks per second for embedding plus FAISS build, per chunking strategy.

Usage:
    HF_HUB_OFFLINE=1 python scripts/bench_index.py                  # data/demo/corpus
    HF_HUB_OFFLINE=1 python scripts/bench_index.py --repeat 4       # the corpus four times over
    HF_HUB_OFFLINE=1 python scripts/bench_index.py --corpus DIR --index hnsw --json out.json

Without data/demo/corpus (or --corpus) it uses a synthetic corpus of repeated paragraphs.
Chunking time is reported apart: the semantic strategy embeds every sentence to chunk, which
is a cost of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from localnova.chunking import chunk_documents
from localnova.config import ChunkingConfig
from localnova.corpus import load_documents
from localnova.embedder import Embedder
from localnova.retrieval import VectorIndex
from localnova.types import Document

STRATEGIES = ("fixed", "hierarchical", "semantic", "none")
DEMO_CORPUS = Path(__file__).resolve().parent.parent / "data" / "demo" / "corpus"


def synthetic_corpus(document_count: int = 30) -> list[Document]:
    paragraphs = [
        "The cabinet's pump circulates water every fifteen minutes and pauses at night to save power.",
        "Replace the carbon filter every ninety days; the app reminds you a week before it is due.",
        "Error E12 means the tank is low: top it up to the line marked MAX and press reset.",
        "The LED panel runs a sixteen hour day by default, adjustable from twelve to eighteen hours.",
    ]
    documents = []
    for number in range(document_count):
        sections = [f"## Section {section}\n\n" + " ".join(paragraphs[(number + section) % 4] for _ in range(3)) for section in range(4)]
        documents.append(Document(f"synthetic-{number:03d}.md", f"# Document {number}\n\n" + "\n\n".join(sections)))
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder (default: data/demo/corpus)")
    parser.add_argument("--repeat", type=int, default=1, help="index the corpus this many times over, for steadier figures")
    parser.add_argument("--index", default="flat", choices=("flat", "hnsw", "ivf"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    corpus_folder = args.corpus or (DEMO_CORPUS if DEMO_CORPUS.is_dir() else None)
    if corpus_folder is not None:
        base_documents, corpus_name = load_documents(corpus_folder), str(corpus_folder)
    else:
        base_documents, corpus_name = synthetic_corpus(), "synthetic (repeated paragraphs)"
    documents = [
        Document(f"{document.doc_id}@{copy}" if args.repeat > 1 else document.doc_id, document.text, document.title)
        for copy in range(args.repeat)
        for document in base_documents
    ]

    embedder = Embedder("all-minilm-l6-v2")
    embedder.encode(["warm-up"] * 4)  # the first call pays one-off start-up costs
    print(
        f"corpus: {corpus_name}, {len(documents)} documents; index: {args.index}; device: {embedder.device}; "
        f"batch size: {args.batch_size}; python {platform.python_version()}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    print(f"{'strategy':<13} {'chunks':>7} {'chunk_s':>8} {'embed_s':>8} {'index_s':>8} {'chunks/s':>9}")
    figures = []
    for strategy in args.strategies.split(","):
        config = ChunkingConfig(strategy=strategy)
        started = time.perf_counter()
        chunks = chunk_documents(documents, config, embedder.tokenizer, embed=embedder)
        chunk_seconds = time.perf_counter() - started
        started = time.perf_counter()
        vectors = embedder.encode([chunk.text for chunk in chunks], batch_size=args.batch_size, show_progress=False)
        embed_seconds = time.perf_counter() - started
        started = time.perf_counter()
        VectorIndex.from_vectors(vectors, chunks, args.index, embedder)
        index_seconds = time.perf_counter() - started
        chunks_per_s = len(chunks) / (embed_seconds + index_seconds)
        figures.append(
            {
                "strategy": strategy,
                "chunks": len(chunks),
                "chunking_s": round(chunk_seconds, 3),
                "embed_s": round(embed_seconds, 3),
                "index_s": round(index_seconds, 4),
                "chunks_per_s": round(chunks_per_s, 1),
            }
        )
        print(f"{strategy:<13} {len(chunks):>7} {chunk_seconds:>8.2f} {embed_seconds:>8.2f} {index_seconds:>8.4f} {chunks_per_s:>9.1f}")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(
            json.dumps(
                {"corpus": corpus_name, "documents": len(documents), "index": args.index, "device": embedder.device, "figures": figures},
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
