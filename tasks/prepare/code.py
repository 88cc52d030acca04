"""Code data: the corpus manifest, a code tokenizer and the CuBERT benchmark tasks.

    tessera prepare code-corpus --stdlib-only               # -> $TESSERA_CACHE/code/corpus-stdlib
    tessera prepare code-corpus                             # stdlib + permissive site-packages -> .../code/corpus
    tessera prepare code-tokenizer --vocab-size 4096 --max-files 300
    tessera prepare code-benchmark --corpus cache:code/corpus-stdlib --out cache:code/benchmark-stdlib

The data modules (``tasks.data.code``) call the same functions from ``prepare_data``, so a
``tessera fit --config configs/code/*.yaml`` builds whatever of this it is missing. Every file is
written under a ``.partial`` name and renamed when complete: an interrupted build leaves nothing
that looks finished, and the next call starts that piece again (finished pieces are kept).

The manifest lists paths on this machine (the code itself is never copied or committed); splits
are by package, so no module's code is in two splits.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections import Counter
from pathlib import Path

from ..data.fetch import cache_path
from ..jobs import UserError, job

STDLIB = "stdlib"
SPLITS = ("train", "valid", "test")


def _write_lines(path: Path, rows) -> None:
    """JSON lines, atomically (NAME.partial, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


# --- corpus -----------------------------------------------------------------------------------
def write_corpus(out: Path, site_packages: bool = True, max_files: int | None = None, workers: int = 1,
                 seed: int = 0, progress: bool = True) -> dict:
    """Discover, deduplicate (normalised-token hash) and split by package; writes manifest.jsonl + stats.json."""
    from modalities.code.corpus import CorpusStats, build_corpus, discover

    stats = CorpusStats()
    files = discover(stats, site_packages=site_packages)
    if max_files is not None:
        files = files[:: max(1, len(files) // max_files)][:max_files]  # an even sample across packages
    rows, summary = build_corpus(files, stats, seed=seed, workers=workers, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    summary.update(seed=seed, site_packages=site_packages, max_files=max_files)
    _write_json(out / "stats.json", summary)
    _write_lines(out / "manifest.jsonl", rows)  # last: its presence means the corpus is complete
    return summary


# the corpora built on first use: name -> (folder, with site-packages)
DEFAULT_CORPORA = {"cache:code/corpus-stdlib": False, "cache:code/corpus": True}


def corpus_manifest(corpus: str | Path, progress: bool = True, cache: Path | None = None) -> Path:
    """The manifest.jsonl of a corpus. "stdlib" (= cache:code/corpus-stdlib) and cache:code/corpus
    (stdlib + permissive site-packages) are built on first use; any other folder or manifest must exist."""
    path = cache_path("cache:code/corpus-stdlib" if str(corpus) == STDLIB else corpus, cache)
    for name, site_packages in DEFAULT_CORPORA.items():
        folder = cache_path(name, cache)
        if path == folder and not (folder / "manifest.jsonl").is_file():
            print(f"[code] building the {'full' if site_packages else 'standard-library'} corpus in {folder} (once)")
            write_corpus(folder, site_packages=site_packages, progress=progress)
    manifest = path / "manifest.jsonl" if path.is_dir() else path
    if not manifest.is_file() and path.is_dir():
        from modalities.code.py150 import manifest_kind

        if manifest_kind(path) is not None:
            raise UserError(f"{path} holds Py150 manifests, not a corpus manifest; convert them with `tessera prepare "
                            f"code-py150 --manifests {path} --root <unpacked Py150> --out cache:code/corpus-py150`")
    if not manifest.is_file():
        raise FileNotFoundError(f"no corpus manifest at {manifest}; build it with `tessera prepare code-corpus --out "
                                f"{corpus}`, or use corpus: stdlib")
    return manifest


def read_manifest(corpus: str | Path, progress: bool = True, cache: Path | None = None) -> list[dict]:
    """The rows of a corpus manifest (JSON lines with at least "path", "package", "split")."""
    manifest = corpus_manifest(corpus, progress, cache)
    rows = []
    try:
        with manifest.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or not all(k in row for k in ("path", "package", "split")):
                    raise ValueError(f"{manifest}:{n} is not a corpus row (needs path, package and split); rebuild it "
                                     "with `tessera prepare code-corpus`")
                rows.append(row)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{manifest} is not a corpus manifest ({type(e).__name__}); give the manifest.jsonl of "
                         "`tessera prepare code-corpus` (or its folder)") from None
    if not rows:
        raise ValueError(f"the corpus {corpus} lists no files; rebuild it with `tessera prepare code-corpus`")
    return rows


def even_sample(rows: list, n: int | None) -> list:
    """``n`` rows spread evenly over ``rows`` (all of them when ``n`` is None or larger)."""
    if n is None or len(rows) <= n:
        return rows
    return rows[:: len(rows) // n][:n]


# --- tokenizer --------------------------------------------------------------------------------
def corpus_key(corpus: str | Path) -> str:
    """A short stable name for a corpus, for cache folders ("stdlib", or corpus-<hash of its path>)."""
    import hashlib

    if str(corpus) == STDLIB:
        return STDLIB
    return "corpus-" + hashlib.sha1(str(cache_path(corpus).resolve()).encode()).hexdigest()[:10]


def tokenizer_folder(cache: Path, corpus: str | Path, vocab_size: int, max_files: int | None) -> Path:
    """Where the tokenizer trained on ``corpus``'s training files lives (shared by pretraining and fine-tuning)."""
    return cache / "code" / "mlm" / corpus_key(corpus) / f"tokenizer-{vocab_size}-{max_files}"


def train_tokenizer(corpus: str | Path, out: Path, vocab_size: int, max_files: int | None = None,
                    progress: bool = True, cache: Path | None = None) -> Path:
    """A WordPiece vocabulary of ``vocab_size`` over the lexed training files of ``corpus`` (an even
    sample of ``max_files`` train + valid files, the training ones used), written to ``out``."""
    from modalities.code import CodeTokenizer

    rows = even_sample([r for r in read_manifest(corpus, progress, cache) if r["split"] in ("train", "valid")], max_files)

    def sources():
        for r in rows:
            if r["split"] != "train":
                continue
            try:
                yield Path(r["path"]).read_bytes().decode("utf-8", "replace")
            except OSError:
                continue

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    CodeTokenizer.train(sources(), vocab_size).save(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


# --- benchmark --------------------------------------------------------------------------------
def extra_training_functions(extra: str | Path, rows: list[dict], functions: dict, max_chars: int = 2000,
                             progress: bool = True) -> tuple[list, dict]:
    """The functions of corpus ``extra`` that may join the training split of the corpus whose
    manifest ``rows`` gave ``functions``: none of its files, none of its valid / test functions,
    no function twice."""
    from modalities.code.benchmark import function_key, functions_of

    seen_paths, seen_hashes = {r["path"] for r in rows}, {r["hash"] for r in rows}
    extra_rows = [r for r in read_manifest(extra, progress) if r["path"] not in seen_paths and r["hash"] not in seen_hashes]
    held_out = {function_key(f) for split in ("valid", "test") for f in functions[split]}
    seen = held_out | {function_key(f) for f in functions["train"]}
    kept, dropped = [], Counter()
    for fn in functions_of(extra_rows, max_chars=max_chars, progress="functions (extra train)" if progress else None):
        key = function_key(fn)
        if key in seen:
            dropped["in valid / test" if key in held_out else "duplicate"] += 1
            continue
        seen.add(key)
        kept.append(fn)
    info = {"corpus": str(extra), "files": len(extra_rows), "packages": len({r["package"] for r in extra_rows}),
            "functions": len(kept), "dropped": dict(dropped)}
    return kept, info


def benchmark_complete(out: Path, task: str) -> bool:
    return all((out / task / f"{s}.jsonl").is_file() for s in SPLITS)


def write_benchmark(corpus: str | Path, out: Path, tasks=None, seed: int = 0, max_functions: int | None = None,
                    max_chars: int = 2000, paired: bool = False, extra_train: str | Path | None = None,
                    max_files: int | None = None, progress: bool = True, cache: Path | None = None) -> dict:
    """The CuBERT tasks from the corpus's package splits: <out>/<task>/{train,valid,test}.jsonl and
    <out>/stats.json. Deterministic for a seed. ``max_files``: an even sample of that many files per
    split (a quick benchmark); ``max_functions``: a seeded sample of that many functions per split.

    ``extra_train`` adds the functions of a second corpus (e.g. the full stdlib + site-packages
    corpus, whose package split differs) to the training split only: its files that are in
    ``corpus`` (same path or normalised-token hash) are left out, and so is every function that is
    also in ``corpus``'s valid or test split (same ``ast``), so the valid and test examples are
    exactly those written without it."""
    from modalities.code.benchmark import TASKS, exception_vocabulary, functions_of, generate

    tasks = list(tasks or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown benchmark task(s) {unknown}; choose from {list(TASKS)}")
    rows = read_manifest(corpus, progress, cache)
    functions = {}
    for split in SPLITS:
        split_rows = even_sample([r for r in rows if r["split"] == split], max_files)
        fns = functions_of(split_rows, max_chars=max_chars, progress=f"functions ({split})" if progress else None)
        if max_functions is not None and len(fns) > max_functions:
            keep = sorted(random.Random(f"{seed}:{split}").sample(range(len(fns)), max_functions))
            fns = [fns[i] for i in keep]  # a seeded sample, in manifest order
        functions[split] = fns
    exceptions = exception_vocabulary(functions["train"], 20)  # before extra_train: the same 20 classes with or without it
    extra = None
    if extra_train is not None:
        fns, extra = extra_training_functions(extra_train, rows, functions, max_chars, progress)
        functions["train"] = functions["train"] + fns
    settings = {"corpus": str(corpus), "seed": seed, "paired": paired, "max_functions": max_functions,
                "max_files": max_files, "max_chars": max_chars, "extra_train": str(extra_train) if extra_train else None}
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / "stats.json").read_text()) if (out / "stats.json").is_file() else {}
    if old.get("settings") not in (None, settings):
        raise UserError(f"{out} holds a benchmark built with other settings ({old['settings']}); "
                        "give another --out, or delete it first")
    stats = {"settings": settings, "functions": {s: len(f) for s, f in functions.items()}, "exception_types": exceptions,
             **({"extra_train": extra} if extra else {}), "tasks": old.get("tasks", {})}
    for task in tasks:
        stats["tasks"][task] = {}
        for split in SPLITS:
            rejected = Counter()
            examples = generate(task, functions[split], seed, exceptions, split, rejected, paired)
            _write_lines(out / task / f"{split}.jsonl", examples)
            labels = Counter(ex["label_name"] for ex in examples)
            stats["tasks"][task][split] = {
                "examples": len(examples), "packages": len({ex["package"] for ex in examples}),
                "labels": dict(labels.most_common()), **({"rejected": dict(rejected)} if rejected else {}),
            }
        _write_json(out / "stats.json", stats)  # after every task: a resumed build keeps what it has
    return stats


# --- jobs -------------------------------------------------------------------------------------
@job("prepare", "code-corpus", help="Python corpus manifest: stdlib (+ permissive site-packages), deduplicated, split by package",
     example="tessera prepare code-corpus --stdlib-only --out cache:code/corpus-stdlib")
def prepare_code_corpus(args: argparse.Namespace) -> int:
    """Build the code corpus manifest: the standard library and (without --stdlib-only) every
    installed distribution under a permissive licence, deduplicated by normalised token hash and
    split 80/10/10 by package. Writes OUT/manifest.jsonl and OUT/stats.json."""
    if args.max_files is not None and args.max_files < 1:
        raise UserError(f"--max-files must be >= 1, got {args.max_files}")
    out = cache_path(args.out or ("cache:code/corpus-stdlib" if args.stdlib_only else "cache:code/corpus"))
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a folder")
    summary = write_corpus(out, not args.stdlib_only, args.max_files, args.workers, args.seed, progress=not args.quiet)
    print(json.dumps(summary.get("splits", summary), indent=2))
    print(f"wrote {out / 'manifest.jsonl'} and {out / 'stats.json'}")
    return 0


@prepare_code_corpus.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output folder; cache:REL is under $TESSERA_CACHE "
                   "(default: cache:code/corpus, or cache:code/corpus-stdlib with --stdlib-only)")
    p.add_argument("--stdlib-only", action="store_true", help="leave site-packages out")
    p.add_argument("--max-files", type=int, default=None, help="an even sample of this many files")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seeds the package split")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@job("prepare", "code-py150", help="ETH Py150 Open's (or Py150's) file manifests -> a code corpus for pretraining and benchmarks",
     example="tessera prepare code-py150 --manifests eth_py150_open/ --root py150_files/ --out cache:code/corpus-py150")
def prepare_code_py150(args: argparse.Namespace) -> int:
    """Read ETH Py150 Open's train__manifest.json / dev__manifest.json / eval__manifest.json (or
    Py150's python100k_train.txt / python50k_eval.txt), find each listed file under --root (the
    unpacked Py150 data archive), drop files that do not lex as Python 3 and duplicates, and write
    OUT/manifest.jsonl + OUT/stats.json in this project's corpus format, keeping the published
    split. Then `--corpus OUT` in `tessera prepare code-benchmark` and the masked-LM configs."""
    from modalities.code.py150 import py150_rows
    from modalities.stats import ReadStats

    for option, value in (("--manifests", args.manifests), ("--root", args.root)):
        if not Path(value).is_dir():
            raise FileNotFoundError(f"{option} {value} is not a folder")
    if args.max_files is not None and args.max_files < 1:
        raise UserError(f"--max-files must be >= 1, got {args.max_files}")
    out = cache_path(args.out)
    stats = ReadStats(unit="files")
    rows = py150_rows(args.manifests, args.root, stats, args.max_files)
    splits = dict(Counter(r["split"] for r in rows))
    summary = {"source": str(Path(args.manifests).resolve()), "root": str(Path(args.root).resolve()),
               "files": stats.records, "splits": splits, "skipped": dict(sorted(stats.skipped.items())),
               "packages": len({r["package"] for r in rows})}
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "stats.json", summary)
    _write_lines(out / "manifest.jsonl", rows)
    print(f"[code] {stats}")
    print(f"wrote {out / 'manifest.jsonl'} ({splits}) and {out / 'stats.json'}")
    return 0


@prepare_code_py150.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifests", required=True, help="the folder holding ETH Py150 Open's *__manifest.json "
                   "(or Py150's python100k_train.txt and python50k_eval.txt)")
    p.add_argument("--root", required=True, help="where Py150's data archive is unpacked (paths resolve under it "
                   "or under its data/)")
    p.add_argument("--out", default="cache:code/corpus-py150", help="output folder; cache:REL is under $TESSERA_CACHE")
    p.add_argument("--max-files", type=int, default=None, help="at most this many files per split")


@job("prepare", "code-benchmark", help="the CuBERT benchmark tasks from a corpus's package splits",
     example="tessera prepare code-benchmark --corpus stdlib --out cache:code/benchmark-stdlib --tasks variable_misuse")
def prepare_code_benchmark(args: argparse.Namespace) -> int:
    """Generate the CuBERT tasks (Variable Misuse, localisation + repair, Wrong Binary Operator,
    Swapped Operands, Function-Docstring, Exception Type) from a corpus: OUT/<task>/{train,valid,
    test}.jsonl and OUT/stats.json. --extra-train CORPUS adds a second corpus's functions to the
    training split only (none of --corpus's files, none of its valid / test functions)."""
    for name in ("max_functions", "max_files"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.extra_train is not None:
        corpus_manifest(args.extra_train)  # a missing extra corpus is named before the long part
    stats = write_benchmark(args.corpus, cache_path(args.out), args.tasks, args.seed, args.max_functions, args.max_chars,
                            args.paired, args.extra_train, args.max_files, progress=not args.quiet)
    for task, splits in stats["tasks"].items():
        print(f"{task:24} " + "  ".join(f"{s} {v['examples']}" for s, v in splits.items()))
    print(f"wrote {cache_path(args.out)}")
    return 0


@prepare_code_benchmark.arguments
def _(p: argparse.ArgumentParser) -> None:
    from modalities.code.benchmark import TASKS

    p.add_argument("--corpus", default="cache:code/corpus", help="a corpus folder (tessera prepare code-corpus), "
                   "or 'stdlib' (built on first use)")
    p.add_argument("--out", default="cache:code/benchmark", help="output folder (cache:REL is under $TESSERA_CACHE)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-functions", type=int, default=None, help="per split, a seeded sample")
    p.add_argument("--max-files", type=int, default=None, help="per split, an even sample of files (a quick benchmark)")
    p.add_argument("--max-chars", type=int, default=2000, help="longest function kept (characters)")
    p.add_argument("--paired", action="store_true",
                   help="bug tasks: each function gives its clean AND its buggy example (default: one of the two)")
    p.add_argument("--extra-train", default=None, metavar="CORPUS",
                   help="a second corpus whose functions join the training split only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@job("prepare", "code-tokenizer", help="a WordPiece code tokenizer trained on a corpus's training files",
     example="tessera prepare code-tokenizer --corpus stdlib --vocab-size 4096 --max-files 300")
def prepare_code_tokenizer(args: argparse.Namespace) -> int:
    """Train the code tokenizer (CuBERT's lexer, then WordPiece subwords) on the training files of a
    corpus. Without --out it goes where `tessera fit` with the same corpus, vocab_size and
    max_files looks for it, so a pretraining and a fine-tuning run share it."""
    from ..data.fetch import default_cache_dir

    if args.vocab_size < 100:
        raise UserError(f"--vocab-size must be >= 100 (the specials and byte pieces need room), got {args.vocab_size}")
    if args.max_files is not None and args.max_files < 1:
        raise UserError(f"--max-files must be >= 1, got {args.max_files}")
    out = cache_path(args.out) if args.out else tokenizer_folder(default_cache_dir(), args.corpus, args.vocab_size,
                                                                  args.max_files)
    out.parent.mkdir(parents=True, exist_ok=True)
    train_tokenizer(args.corpus, out, args.vocab_size, args.max_files, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


@prepare_code_tokenizer.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default=STDLIB, help="'stdlib' or a corpus folder (tessera prepare code-corpus)")
    p.add_argument("--vocab-size", type=int, default=16384)
    p.add_argument("--max-files", type=int, default=None, help="an even sample of this many files")
    p.add_argument("--out", default=None, help="tokenizer folder (default: the cache path `tessera fit` uses)")
    p.add_argument("--quiet", action="store_true")
