"""The CuBERT benchmark tasks, generated with ``ast`` from real code (the corpus splits).

Every example is one function (its source dedented, decorators left out), edited at the exact
character positions ``ast`` and the lexer give, so the code around an edit keeps its original
formatting (no ``ast.unparse`` round trip that a model could tell apart from real code). Every
emitted example is checked to parse. Binary tasks are balanced exactly within a split: the
eligible functions are shuffled with a seeded generator, the first half gets the bug; with
``paired=True`` every eligible function gives both its clean and its buggy example instead.

Tasks (``TASKS``):
- ``variable_misuse``: one use of a local variable replaced by another local variable (label 1).
- ``wrong_binary_operator``: one operator replaced by another of its family (arithmetic,
  comparison, boolean) (label 1).
- ``swapped_operands``: the operands of a non-commutative binary operator or a comparison
  swapped; both operands are atoms (name, constant, attribute, subscript, call) (label 1).
- ``exception_type``: the type of one ``except`` clause replaced by ``__HOLE__``; the label is
  the type among the 20 most frequent in the training split.
- ``function_docstring``: a (docstring, function-without-docstring) pair; label 1 when the
  docstring belongs to another function of the same split.
- ``variable_misuse_repair``: as variable_misuse, with character spans for the bug location
  (None when bug-free), every variable occurrence (repair candidates) and the occurrences of the
  right variable (repair targets).

Every example of the bug tasks and of exception_type also carries ``site``: the character span of
the edit in its own source, for a clean example the place the edit would have gone (the mutation
is drawn for every eligible function before half of them get it). A model that reads only the
first N tokens cannot see an edit beyond them, so ``tasks.data.code.featurise`` drops examples
whose site is cut off; the site is drawn the same way for both labels, so the drop takes no side.
"""

from __future__ import annotations

import ast
import hashlib
import random
import textwrap
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .lexer import lex

TASKS = (
    "variable_misuse", "wrong_binary_operator", "swapped_operands", "exception_type",
    "function_docstring", "variable_misuse_repair",
)
HOLE = "__HOLE__"

_OP_FAMILIES = [
    ["+", "-", "*", "/", "//", "%", "**"],
    ["<<", ">>", "&", "|", "^"],
    ["==", "!=", "<", "<=", ">", ">="],
    ["is", "in"],
    ["and", "or"],
]
_FAMILY = {op: fam for fam in _OP_FAMILIES for op in fam}
_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift, ast.MatMult)
_ORDERED = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_ATOMS = (ast.Name, ast.Constant, ast.Attribute, ast.Subscript, ast.Call)


@dataclass
class Function:
    """A function's dedented source and where it came from."""

    source: str
    package: str
    path: str
    name: str
    line: int  # first line of the ``def`` in the file


class Positions:
    """(lineno, col in UTF-8 bytes) as ``ast`` reports -> character offset in the source."""

    def __init__(self, source: str):
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def __call__(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        if not line.isascii():
            col = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.starts[lineno - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self(node.lineno, node.col_offset), self(node.end_lineno, node.end_col_offset)


def _parses(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def extract_functions(source: str, package: str, path: str, max_chars: int = 2000, min_lines: int = 3) -> Iterator[Function]:
    """Every (async) function of a module whose dedented source parses on its own and is short enough."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return
    lines = source.splitlines(keepends=True)
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        n_lines = node.end_lineno - node.lineno + 1
        if n_lines < min_lines:
            continue
        text = textwrap.dedent("".join(lines[node.lineno - 1 : node.end_lineno]))
        if len(text) > max_chars or not text.lstrip().startswith(("def", "async")) or not _parses(text):
            continue
        yield Function(text, package, path, node.name, node.lineno)


def _func_node(fn: Function) -> ast.FunctionDef:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(fn.source).body[0]


def function_key(fn: Function) -> str:
    """The function's identity up to formatting and comments (a hash of its ``ast`` dump, names and
    docstring kept): two copies of one function in different files share it."""
    return hashlib.sha1(ast.dump(_func_node(fn)).encode()).hexdigest()


def _splice(source: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source


# --- variable misuse --------------------------------------------------------------------------
def _variables(node: ast.FunctionDef, pos: Positions):
    """Local variables (parameters and assigned names) and every occurrence of them."""
    occurrences: dict[str, list[tuple[int, int, bool]]] = {}  # name -> (start, end, is_use)
    args = node.args
    for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
        if a is not None and a.arg not in ("self", "cls"):
            s = pos(a.lineno, a.col_offset)
            occurrences.setdefault(a.arg, []).append((s, s + len(a.arg), False))
    local = set(occurrences)
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            local.add(n.id)
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id in local:
            s, e = pos.span(n)
            occurrences.setdefault(n.id, []).append((s, e, isinstance(n.ctx, ast.Load)))
    return {k: sorted(v) for k, v in occurrences.items() if k in local}


def local_variables(source: str) -> dict[str, list[tuple[int, int, bool]]]:
    """The local variables of the one function in ``source`` (parameters other than self / cls,
    and assigned names), each with its occurrences as (start, end, is_use) character spans: the
    candidates from which the benchmark's Variable-Misuse bugs are drawn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        node = ast.parse(source).body[0]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        raise ValueError(f"expected the source of one function, got a {type(node).__name__} first")
    return _variables(node, Positions(source))


def _misuse(fn: Function, rng: random.Random):
    """(buggy source, site in it, site in the clean source, right name, wrong name, occurrences) or None."""
    pos = Positions(fn.source)
    occ = _variables(_func_node(fn), pos)
    if len(occ) < 2:
        return None
    uses = [(name, s, e) for name, spans in occ.items() for s, e, is_use in spans if is_use]
    if not uses:
        return None
    name, s, e = rng.choice(uses)
    wrong = rng.choice(sorted(n for n in occ if n != name))
    buggy = _splice(fn.source, [(s, e, wrong)])
    return buggy, (s, s + len(wrong)), (s, e), name, wrong, occ


# --- operators --------------------------------------------------------------------------------
def _operator_sites(fn: Function) -> list[tuple[int, int, str]]:
    """(start, end, spelling) of every single-lexeme binary, comparison and boolean operator."""
    pos = Positions(fn.source)
    lexemes = lex(fn.source).tokens
    starts = [t.start for t in lexemes]
    sites = []

    def find_between(lo: int, hi: int, spellings: set[str]):
        import bisect

        k = bisect.bisect_left(starts, lo)
        while k < len(lexemes) and lexemes[k].start < hi:
            t = lexemes[k]
            if t.text in spellings and t.kind in ("op", "name"):
                # `is not` / `not in` are two lexemes: leave them alone
                nxt = lexemes[k + 1].text if k + 1 < len(lexemes) else ""
                prv = lexemes[k - 1].text if k else ""
                if not (t.text == "is" and nxt == "not") and not (t.text == "in" and prv == "not"):
                    return t
                return None
            k += 1
        return None

    for n in ast.walk(_func_node(fn)):
        pairs = []
        if isinstance(n, ast.BinOp):
            pairs = [(n.left, n.right)]
        elif isinstance(n, ast.Compare):
            pairs = list(zip([n.left, *n.comparators[:-1]], n.comparators, strict=True))
        elif isinstance(n, ast.BoolOp):
            pairs = list(zip(n.values[:-1], n.values[1:], strict=True))
        for left, right in pairs:
            t = find_between(pos.span(left)[1], pos.span(right)[0], set(_FAMILY))
            if t is not None:
                sites.append((t.start, t.end, t.text))
    return sorted(set(sites))


def _wrong_operator(fn: Function, rng: random.Random):
    """(buggy source, site in it, site in the clean source) or None."""
    sites = _operator_sites(fn)
    if not sites:
        return None
    s, e, op = rng.choice(sites)
    other = rng.choice([o for o in _FAMILY[op] if o != op])
    src = fn.source
    if other.isalpha():  # a keyword needs a space on each side that has none
        other = ("" if s and src[s - 1].isspace() else " ") + other + ("" if e < len(src) and src[e].isspace() else " ")
    return _splice(src, [(s, e, other)]), (s, s + len(other)), (s, e)


def _swapped(fn: Function, rng: random.Random):
    """(buggy source, site in it, site in the clean source) or None; the site spans both operands."""
    pos = Positions(fn.source)
    sites = []
    for n in ast.walk(_func_node(fn)):
        if isinstance(n, ast.BinOp) and isinstance(n.op, _NON_COMMUTATIVE):
            left, right = n.left, n.right
        elif isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], (*_ORDERED, ast.In, ast.NotIn)):
            left, right = n.left, n.comparators[0]
        else:
            continue
        if isinstance(left, _ATOMS) and isinstance(right, _ATOMS):
            ls, rs = pos.span(left), pos.span(right)
            a, b = fn.source[ls[0] : ls[1]], fn.source[rs[0] : rs[1]]
            if a != b and "\n" not in a + b:
                sites.append((ls, rs, a, b))
    if not sites:
        return None
    ls, rs, a, b = rng.choice(sites)
    both = (ls[0], rs[1])  # len(a) + len(b) is unchanged by the swap
    return _splice(fn.source, [(ls[0], ls[1], b), (rs[0], rs[1], a)]), both, both


# --- exception type ---------------------------------------------------------------------------
def _handlers(fn: Function) -> list[tuple[int, int, str]]:
    pos = Positions(fn.source)
    out = []
    for n in ast.walk(_func_node(fn)):
        if isinstance(n, ast.ExceptHandler) and isinstance(n.type, ast.Name | ast.Attribute):
            s, e = pos.span(n.type)
            out.append((s, e, fn.source[s:e]))
    return out


def exception_vocabulary(functions: Iterable[Function], k: int = 20) -> list[str]:
    counts = Counter(name for fn in functions for _, _, name in _handlers(fn))
    return [name for name, _ in counts.most_common(k)]


# --- docstrings -------------------------------------------------------------------------------
def _split_docstring(fn: Function) -> tuple[str, str] | None:
    """(docstring, function source without it) or None."""
    node = _func_node(fn)
    doc = ast.get_docstring(node, clean=True)
    if not doc or len(doc) < 20 or len(node.body) < 2:
        return None
    pos = Positions(fn.source)
    d = node.body[0]
    s, e = pos.span(d)
    line_start = fn.source.rfind("\n", 0, s) + 1
    line_end = fn.source.find("\n", e)
    code = fn.source[:line_start] + fn.source[(line_end + 1 if line_end >= 0 else e):]
    if not _parses(code):
        return None
    return doc, code


# --- generation -------------------------------------------------------------------------------
def _base(fn: Function) -> dict:
    return {"package": fn.package, "path": fn.path, "function": fn.name, "line": fn.line}


def generate(task: str, functions: list[Function], seed: int = 0, exceptions: list[str] | None = None,
             split: str = "train", stats: Counter | None = None, paired: bool = False) -> list[dict]:
    """Examples of one task from one split's functions; deterministic for (seed, task, split).

    ``paired`` (the bug tasks only): every eligible function gives both its clean and its buggy
    example, instead of one of the two. Unpaired, a model can learn which *functions* are buggy
    (their identity) instead of the bug; paired, the two examples differ only at the edit.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {TASKS}")
    stats = stats if stats is not None else Counter()
    rng = random.Random(f"{seed}:{task}:{split}")
    order = list(range(len(functions)))
    rng.shuffle(order)
    out: list[dict] = []

    if task == "exception_type":
        if not exceptions:
            raise ValueError("exception_type needs the exception vocabulary (exception_vocabulary on the train split)")
        index = {n: i for i, n in enumerate(exceptions)}
        for i in order:
            fn = functions[i]
            hs = [h for h in _handlers(fn) if h[2] in index]
            if not hs:
                continue
            s, e, name = rng.choice(hs)
            src = _splice(fn.source, [(s, e, HOLE)])
            if not _parses(src):
                stats["rejected: does not parse"] += 1
                continue
            out.append({**_base(fn), "source": src, "label": index[name], "label_name": name, "site": [s, s + len(HOLE)]})
        return out

    if task == "function_docstring":
        pairs = [(functions[i], p) for i in order if (p := _split_docstring(functions[i])) is not None]
        half = len(pairs) // 2
        mismatched, matched = [], []
        for k, (fn, (doc, code)) in enumerate(pairs):
            if k < half:  # the docstring of another function with a different docstring
                for _ in range(20):
                    other_doc = pairs[rng.randrange(len(pairs))][1][0]
                    if other_doc != doc:
                        mismatched.append({**_base(fn), "source": code, "docstring": other_doc, "label": 1,
                                           "label_name": "mismatch"})
                        break
            else:
                matched.append({**_base(fn), "source": code, "docstring": doc, "label": 0, "label_name": "match"})
        n = min(len(mismatched), len(matched))  # exactly balanced
        out = mismatched[:n] + matched[:n]
        rng.shuffle(out)
        return out

    mutate = {"variable_misuse": _misuse, "variable_misuse_repair": _misuse,
              "wrong_binary_operator": _wrong_operator, "swapped_operands": _swapped}[task]
    eligible = []
    for i in order:
        fn = functions[i]
        m = mutate(fn, rng)
        if m is None:
            continue
        buggy = m[0]
        if buggy == fn.source or not _parses(buggy):
            stats["rejected: does not parse or unchanged"] += 1
            continue
        eligible.append((fn, m))
    half = len(eligible) // 2
    labelled = [(fn, m, bug) for k, (fn, m) in enumerate(eligible)
                for bug in ((True, False) if paired else (k < half,))]  # paired: both versions of each
    for fn, m, bug in labelled:
        site = m[1] if bug else m[2]
        if task == "variable_misuse_repair":
            buggy, (bs, be), _, right, wrong, occ = m
            shift = len(wrong) - len(right)
            src = buggy if bug else fn.source

            def moved(span, bs=bs, be=be, shift=shift, bug=bug):
                s, e = span
                return (s + shift, e + shift) if bug and s >= be - shift else (s, e)

            if bug:
                candidates = sorted({moved((s, e)) for spans in occ.values() for s, e, _ in spans if s != bs} | {(bs, be)})
                targets = sorted(moved((s, e)) for s, e, _ in occ[right] if s != bs)
            else:
                candidates = sorted({(s, e) for spans in occ.values() for s, e, _ in spans})
                targets = []
            ex = {**_base(fn), "source": src, "label": int(bug), "label_name": "buggy" if bug else "clean",
                  "error_span": [bs, be] if bug else None, "candidate_spans": [list(c) for c in candidates],
                  "target_spans": [list(t) for t in targets], "site": list(site)}
            if bug and (not targets or src[bs:be] != wrong or any(src[s:e] != right for s, e in targets)):
                stats["rejected: span check"] += 1
                continue
            out.append(ex)
        else:
            out.append({**_base(fn), "source": m[0] if bug else fn.source, "label": int(bug),
                        "label_name": "buggy" if bug else "clean", "site": list(site)})
    rng.shuffle(out)  # buggy and clean interleaved in the written file
    return out


def functions_of(rows: Iterable[dict], max_chars: int = 2000, max_per_file: int | None = None,
                 progress: str | None = None) -> list[Function]:
    """Functions of manifest rows ({"path", "package"}), in manifest order; ``progress``: the
    description of a progress bar over the files (none without it)."""
    out = []
    if progress is not None:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc=progress, unit="file", mininterval=2.0, total=len(rows) if hasattr(rows, "__len__") else None)
    for r in rows:
        try:
            src = Path(r["path"]).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        fns = list(extract_functions(src, r["package"], r["path"], max_chars=max_chars))
        out.extend(fns[:max_per_file] if max_per_file else fns)
    return out
