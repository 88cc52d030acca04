"""The CuBERT comparison, and two more ways to judge a code encoder, as ``tessera eval`` jobs:

    tessera eval code --benchmark cache:code/benchmark-stdlib --init-from runs/code/mlm-tiny/lightning_logs/version_0/encoder
    tessera eval code-misuse --mlm runs/code/mlm-small --benchmark cache:code/benchmark-stdlib
    tessera eval code-predict --model runs/code/eval/variable_misuse_repair/pretrained/lr0.0003 mypkg/

``code``: the pretrained encoder, the same Transformer from scratch and a BiLSTM, fine-tuned with
the same budget on the same splits; results.json + results.png (test figures per task and model)
in --out, and each run's tested weights (reload with ``tasks.runs.load_system``).
``code-misuse``: Variable Misuse from the masked LM's own head, no fine-tuning (``tasks.code_misuse``).
``code-predict``: a fine-tuned bug detector over your Python files, JSON lines (``tasks.code_predict``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..jobs import UserError, job
from .code_results import (  # noqa: F401  (re-exported: tasks.eval.code is the module users import)
    MODELS,
    _existing_files,
    _write_table,
    headline,
    merge,
    plot,
    pool_seeds,
    print_table,
)
from .code_sweep import (  # noqa: F401
    CLASSIFIER_METRICS,
    POOLINGS,
    SELECTABLE,
    build,
    encoder_config,
    evaluate,
    pretrained_setup,
    save_run,
    select,
    selectable,
)


@job("eval", "code", help="fine-tune pretrained vs from-scratch vs BiLSTM on CuBERT tasks (JSON + plot)",
     example="tessera eval code --benchmark cache:code/benchmark-stdlib-tiny --init-from runs/code/mlm-tiny "
             "--tasks variable_misuse --steps 300")
def eval_code(args: argparse.Namespace) -> int:
    """Fine-tune the pretrained encoder (--init-from: an encoder folder or a masked-LM run), the same
    Transformer from scratch and a BiLSTM with the same budget on the same splits of each task and
    report test figures; with several --lr each model keeps the one with the best validation score.
    --merge / --pool-seeds join results.json files of earlier runs instead of training."""
    out = Path(args.out)
    if args.merge or args.pool_seeds:
        files = args.merge or args.pool_seeds
        _existing_files(files, "--merge" if args.merge else "--pool-seeds")
        results = merge(files) if args.merge else pool_seeds(files)
        _write_table(results, out)
        return 0
    if args.benchmark is None:
        raise UserError("--benchmark is required (a folder of `tessera prepare code-benchmark` or of CuBERT's released "
                        "files), unless --merge or --pool-seeds")
    from ..data.fetch import cache_path

    benchmark = cache_path(args.benchmark)
    if not benchmark.is_dir():
        raise FileNotFoundError(f"--benchmark {benchmark} does not exist; build it with "
                                f"`tessera prepare code-benchmark --out {args.benchmark}`")
    from modalities.code.cubert_release import RELEASE_FOLDERS

    from ..data.code import has_split

    for task in args.tasks:
        if not has_split(benchmark, task, "train"):
            raise FileNotFoundError(f"--benchmark {benchmark} has no {task}/train.jsonl and no CuBERT "
                                    f"{RELEASE_FOLDERS[task]}/train.jsontxt-* shards; build it with "
                                    f"`tessera prepare code-benchmark --out {args.benchmark} --tasks {task}`")
        if args.select_by is not None and args.select_by not in selectable(task):
            raise UserError(f"--select-by {args.select_by} is not a validation metric of {task}; choose one of {selectable(task)}")
    tokenizer = cache_path(args.tokenizer) if args.tokenizer else None
    if tokenizer is not None and not tokenizer.exists():
        raise FileNotFoundError(f"--tokenizer {tokenizer} does not exist; give a code tokenizer (a tokenizer or encoder "
                                "folder, a tokenizer.json or a CuBERT vocabulary)")
    if args.init_from:
        enc_cfg, own_tok = pretrained_setup(args.init_from)
        tokenizer = tokenizer or own_tok
    else:
        if "pretrained" in args.models and args.models != ["pretrained"]:
            print("no --init-from: the pretrained row is left out")
        enc_cfg = encoder_config(args.config)
    if tokenizer is None or not tokenizer.exists():
        where = f"--init-from {args.init_from} carries no code tokenizer" if args.init_from else f"no code tokenizer ({tokenizer})"
        raise FileNotFoundError(f"{where}; give --tokenizer (a tokenizer or encoder folder), or --init-from an "
                                "encoder folder, which carries its own")
    results = evaluate(args.tasks, benchmark, tokenizer, args.init_from, enc_cfg, out, args.steps,
                       args.batch_size, args.max_length, args.max_examples, args.lr, args.models, args.seed,
                       progress=not args.quiet, precision=args.precision, bilstm_lr=args.bilstm_lr, pooling=args.pooling,
                       val_every=args.val_every, select_by=args.select_by, save_models=args.save_models)
    print_table(results)
    print(f"wrote {out / 'results.json'} and {out / 'results.png'}")
    return 0


@eval_code.arguments
def _(p: argparse.ArgumentParser) -> None:
    from modalities.code import TASKS

    p.add_argument("--benchmark", default=None,
                   help="a benchmark folder: `tessera prepare code-benchmark`'s, or CuBERT's released files "
                        "(<name>_datasets/{train,dev,eval}.jsontxt-*); cache:REL is under $TESSERA_CACHE")
    p.add_argument("--init-from", default=None, help="the pretrained encoder: an encoder folder or a masked-LM run")
    p.add_argument("--tokenizer", default=None, help="code tokenizer (default: the one --init-from carries)")
    p.add_argument("--config", default="configs/code/varmisuse_tiny.yaml",
                   help="without --init-from: a YAML whose encoder config the Transformers use")
    p.add_argument("--tasks", nargs="+", default=["variable_misuse"], choices=TASKS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-examples", type=int, default=4000)
    p.add_argument("--lr", type=float, nargs="+", default=[3e-4],
                   help="one or more; with several, each model keeps the one with the best validation score")
    p.add_argument("--bilstm-lr", type=float, nargs="+", default=None, help="the BiLSTM's own learning rate(s)")
    p.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    p.add_argument("--pooling", default="cls", choices=POOLINGS,
                   help="the Transformers' classification input: [CLS] (CuBERT), the mean or the max over tokens")
    p.add_argument("--val-every", type=int, default=None,
                   help="validate every N steps and test the best validation round's weights (default: the last)")
    p.add_argument("--select-by", default=None, choices=sorted({k for v in SELECTABLE.values() for k in v} | set(CLASSIFIER_METRICS)),
                   help="the validation metric that chooses the round and the lr (default: joint for "
                        "variable_misuse_repair, accuracy otherwise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-models", action=argparse.BooleanOptionalAction, default=True,
                   help="keep each run's tested weights + config.yaml under OUT (for tessera eval code-predict)")
    p.add_argument("--merge", nargs="+", default=None, metavar="RESULTS[:MODEL,...]",
                   help="join these results.json files into --out instead of training; PATH:scratch,bilstm takes "
                        "only those models from PATH")
    p.add_argument("--pool-seeds", nargs="+", default=None, metavar="RESULTS",
                   help="mean and standard deviation over results.json files that differ only in --seed")
    p.add_argument("--out", default="runs/code/eval")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@job("eval", "code-misuse", help="Variable Misuse from a masked LM's own head, no fine-tuning (JSON + plot)",
     example="tessera eval code-misuse --mlm runs/code/mlm-tiny --benchmark cache:code/benchmark-stdlib-tiny")
def eval_code_misuse(args: argparse.Namespace) -> int:
    """Every use of a local variable is masked in turn and the MLM head scores the name written
    there against the function's other locals; thresholds are chosen on the valid split, figures
    reported on test (classification, AUROC; localisation, repair, joint for the repair task)."""
    from ..code_misuse import print_table, run
    from ..data.fetch import cache_path

    benchmark = cache_path(args.benchmark)
    if not benchmark.is_dir():
        raise FileNotFoundError(f"--benchmark {benchmark} does not exist; build it with "
                                f"`tessera prepare code-benchmark --out {args.benchmark}`")
    from modalities.code.cubert_release import is_release

    if is_release(benchmark) and "variable_misuse_repair" in args.tasks:
        raise UserError(f"--benchmark {benchmark} is CuBERT's release, whose variable_misuse_repair is pre-tokenised; "
                        "code-misuse scores source text: give --tasks variable_misuse (CuBERT's classification files)")
    results = run(benchmark, args.tokenizer and cache_path(args.tokenizer), args.mlm, Path(args.out), args.tasks,
                  args.max_length, args.max_examples, args.batch_size, args.precision, progress=not args.quiet,
                  paired_benchmark=cache_path(args.paired) if args.paired else None, max_pairs=args.max_pairs)
    print_table(results)
    if "paired" in results:
        print("within pairs:", json.dumps(results["paired"]))
    print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'margins.png'}")
    return 0


@eval_code_misuse.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mlm", required=True, help="a masked-LM run (tessera fit --config configs/code/mlm_*.yaml): "
                   "its folder, log folder or a .ckpt in it")
    p.add_argument("--benchmark", required=True, help="a benchmark folder (tessera prepare code-benchmark)")
    p.add_argument("--tokenizer", default=None, help="the encoder's code tokenizer (default: the run's own)")
    p.add_argument("--out", default="runs/code/misuse-mlm")
    p.add_argument("--tasks", nargs="+", default=["variable_misuse", "variable_misuse_repair"],
                   choices=("variable_misuse", "variable_misuse_repair"))
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-examples", type=int, default=None, help="per split, a seeded sample (as tessera eval code)")
    p.add_argument("--batch-size", type=int, default=64, help="masked sequences per forward pass")
    p.add_argument("--precision", choices=("bf16", "32"), default="bf16")
    p.add_argument("--paired", default=None, help="also a benchmark written with --paired: how the bug moves the scores")
    p.add_argument("--max-pairs", type=int, default=400)
    p.add_argument("--quiet", action="store_true")


@job("eval", "code-predict", help="a fine-tuned bug detector over Python files: JSON lines, most suspicious first",
     example="tessera eval code-predict --model runs/code/repair-tiny mypkg/ --out runs/code/preds.jsonl")
def eval_code_predict(args: argparse.Namespace) -> int:
    """Score every function under the given paths with a fine-tuned model (a `tessera fit` run of
    configs/code/varmisuse_tiny.yaml, repair_tiny.yaml, ..., or a run folder `tessera eval code`
    kept): the bug probability, and for variable_misuse_repair also the occurrence the pointer
    suspects and the variable it would put there. Writes one JSON line per function (skipped ones
    last, with the reason) and prints the --top ones. The scores are only as good as the model."""
    from ..code_predict import predict_paths

    return predict_paths(args.model, args.paths, Path(args.out), args.max_chars, args.batch_size, args.top,
                         progress=not args.quiet)


@eval_code_predict.arguments
def _(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="Python files or folders (searched for *.py)")
    p.add_argument("--model", required=True, help="a fine-tuned run: its folder, log folder or a checkpoint in it")
    p.add_argument("--out", default="predictions.jsonl", help="JSON lines, most suspicious first")
    p.add_argument("--max-chars", type=int, default=20000, help="functions longer than this are left out")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--quiet", action="store_true")
