"""Every shipped training system, interrupted and resumed with ``--ckpt_path last``, ends with the
weights of a run that was never interrupted, bit for bit.

For each system its shipped tiny YAML is shrunk (a narrower, shallower model on data the test writes,
dropout switched on where the YAML has it off) and run through the real ``tessera fit`` (in-process,
the default logger on, every default callback): one run of ``STEPS`` steps keeps the checkpoint of step
``CUT``; that checkpoint is laid where an interrupted run leaves its ``last.ckpt`` (another run folder,
``lightning_logs/version_0/checkpoints/last.ckpt``) and ``tessera fit --ckpt_path last`` finishes it.
Everything a resume must restore is exercised: weights, optimizer and schedule, the data loader's
mid-epoch position and its per-sample seeds, the masking / noise seeds, and (``RandomState``) the torch,
NumPy and Python generators that dropout and negative sampling draw from; a validation round and a
sanity check run in both. The real-process SIGKILL of the text masked LM is
``tests/test_export.py::test_a_sigkilled_fit_resumes_with_last_to_the_uninterrupted_weights``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS, CUT = 3, 2  # the run's length; the step whose checkpoint the resumed run starts from

# a token encoder small enough that a step costs milliseconds; dropout on
TOKEN = {"vocab_size": 200, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
         "max_position_embeddings": 64, "hidden_dropout": 0.1, "attention_dropout": 0.1}
LLAMA = {"vocab_size": 200, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
         "num_key_value_heads": 1, "intermediate_size": 32, "max_position_embeddings": 64}
WORDS = ("the model reads a sequence of tokens and predicts the masked ones from their context while "
         "the optimizer lowers the loss step by step").split()


def merge(base: dict, over: dict) -> dict:
    """``over`` written into ``base``: dicts merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def at(path: str, value) -> dict:
    """``at("a.b.c", v)`` -> {"a": {"b": {"c": v}}}."""
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


# --- the data each system trains on, written by the test ---------------------------------------------
def text_corpus(tmp: Path) -> Path:
    folder = tmp / "text"
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for k in range(4):
        docs = [" ".join(WORDS[j] for j in torch.randint(0, len(WORDS), (int(n),), generator=g).tolist())
                for n in torch.randint(6, 20, (12,), generator=g)]
        (folder / f"part{k}.txt").write_text("\n\n".join(docs) + "\n")
    return folder


def code_corpus(tmp: Path) -> Path:
    import json

    from code_fixtures import module_source

    folder = tmp / "code"
    folder.mkdir(exist_ok=True)
    rows = []
    for p in range(4):
        (folder / f"m{p}.py").write_text(module_source(6, offset=p))
        rows.append({"path": str(folder / f"m{p}.py"), "package": f"p{p}", "split": "valid" if p == 0 else "train"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def code_benchmark(tmp: Path) -> tuple[Path, Path]:
    from code_fixtures import make_functions, write_benchmark_dir

    if not (tmp / "bench").is_dir():
        write_benchmark_dir(tmp, make_functions(), tasks=("variable_misuse", "variable_misuse_repair"))
    return tmp / "bench", tmp / "tok"


def interactions(tmp: Path) -> Path:
    path = tmp / "u.data"
    path.write_text("".join(f"{u}\t{(u * 3 + k) % 40 + 1}\t5\t{100 * u + k}\n" for u in range(1, 25) for k in range(9)))
    return path


def tones(tmp: Path) -> Path:
    from audio_fixtures import tone_folder

    return tmp / "music" if (tmp / "music").is_dir() else tone_folder(tmp, 8, 0.4)


def reports(tmp: Path) -> Path:
    from cxr_fixtures import write_reports

    return tmp / "openi" if (tmp / "openi").is_dir() else write_reports(tmp / "openi", n=48)


# --- each shipped system: its tiny YAML and what shrinks it ----------------------------------------
def token_encoder(prefix: str = "model.init_args.encoder.init_args.config", **kw) -> dict:
    return at(prefix, {**TOKEN, **kw})


def masked_text(tmp: Path) -> dict:
    return merge(token_encoder(), at("data.init_args", {"corpus": str(text_corpus(tmp)), "vocab_size": 200,
                                                        "max_length": 24, "batch_size": 4, "val_fraction": 0.25}))


def masked_code(tmp: Path) -> dict:
    return merge(token_encoder(), at("data.init_args", {"corpus": str(code_corpus(tmp)), "vocab_size": 200,
                                                        "max_length": 32, "batch_size": 4, "max_files": None}))


def code_task(tmp: Path) -> dict:
    bench, tok = code_benchmark(tmp)
    return merge(token_encoder(vocab_size=300, max_position_embeddings=64),
                 at("data.init_args", {"benchmark": str(bench), "tokenizer": str(tok), "max_length": 48,
                                       "batch_size": 4, "max_examples": 32}))


def recsys(kind: str):
    def shrink(tmp: Path) -> dict:
        return merge(at("model.init_args.model.init_args.config", {"max_length": 8, "hidden_size": 16,
                                                                   "intermediate_size": 32}),
                     merge(at("model.init_args.negatives", 10),
                           at("data.init_args", {"dataset": str(interactions(tmp)), "max_length": 8,
                                                 "batch_size": 4, "eval_batch_size": 8})))
    return shrink


def mert(tmp: Path) -> dict:
    enc = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "conv_dim": [16] * 7,
           "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "hidden_dropout": 0.1,
           "attention_dropout": 0.1}
    return merge(merge(at("model.init_args.encoder.init_args.config", enc), at("model.init_args.fit_codebooks_batches", 1)),
                 merge(at("model.init_args.rvq_teacher.init_args", {"codebook_size": 8, "n_mels": 16}),
                       at("data.init_args", {"train": str(tones(tmp)), "crop_seconds": 0.25, "batch_size": 2,
                                             "val_fraction": 0.25})))


def rvq(tmp: Path) -> dict:
    return merge(merge(at("model.init_args.teacher.init_args", {"codebook_size": 8, "num_filters": 4, "hidden_size": 8}),
                       at("model.init_args.fit_codebooks_batches", 1)),
                 at("data.init_args", {"train": str(tones(tmp)), "crop_seconds": 0.25, "batch_size": 2,
                                       "val_fraction": 0.25}))


def report_data(tmp: Path, **kw) -> dict:
    return at("data.init_args", {"reports": str(reports(tmp)), "vocab_size": 200, "max_length": 32, "batch_size": 4,
                                 "cache_dir": str(tmp / "cache"), **kw})


def cxr_bert(prefix: str):
    def shrink(tmp: Path) -> dict:
        return merge(token_encoder(prefix, position="rope", norm="pre", activation="swiglu", bias=False),
                     report_data(tmp))
    return shrink


def cxr_llm(prefix: str, dropout: float = 0.1):
    def shrink(tmp: Path) -> dict:
        return merge(at(prefix, {**LLAMA, "attention_dropout": dropout}), report_data(tmp))
    return shrink


def clip(tmp: Path) -> dict:
    tower = "model.init_args.model.init_args"
    return merge(merge(at(f"{tower}.text_tower.init_args.config.decoder", {**LLAMA, "attention_dropout": 0.1}),
                       at(f"{tower}.embed_dim", 16)),
                 report_data(tmp, image_size=32))


SYSTEMS = {  # name: (shipped YAML, what shrinks it)
    "text masked LM": ("text/tiny.yaml", masked_text),
    "code masked LM": ("code/mlm_tiny.yaml", masked_code),
    "code variable misuse": ("code/varmisuse_tiny.yaml", code_task),
    "code misuse repair": ("code/repair_tiny.yaml", code_task),
    "text ELECTRA": ("text/electra_tiny.yaml", masked_text),
    "code ELECTRA": ("code/electra_tiny.yaml", masked_code),
    "audio MERT": ("audio/tiny.yaml", mert),
    "audio RVQ-VAE": ("audio/rvq_tiny.yaml", rvq),
    "recsys BERT4Rec": ("recsys/bert4rec_tiny.yaml", recsys("bert4rec")),
    "recsys SASRec": ("recsys/sasrec_tiny.yaml", recsys("sasrec")),
    "cxr BERT masked LM": ("cxr/bert_mlm_tiny.yaml", cxr_bert("model.init_args.encoder.init_args.config")),
    "cxr BERT SimCSE": ("cxr/bert_simcse_tiny.yaml", cxr_bert("model.init_args.tower.init_args.encoder.init_args.config")),
    "cxr LLM2Vec causal LM": ("cxr/llm2vec_clm_tiny.yaml", cxr_llm("model.init_args.encoder.init_args.config.decoder")),
    "cxr LLM2Vec MNTP": ("cxr/llm2vec_mntp_tiny.yaml", cxr_llm("model.init_args.encoder.init_args.config.decoder")),
    "cxr LLM2Vec SimCSE": ("cxr/llm2vec_simcse_tiny.yaml",
                           cxr_llm("model.init_args.tower.init_args.config.decoder", 0.3)),
    "cxr LLM2Vec supervised": ("cxr/llm2vec_supervised_tiny.yaml",
                               cxr_llm("model.init_args.tower.init_args.config.decoder")),
    "cxr CLIP": ("cxr/clip_tiny.yaml", clip),
}

TRAINER = {  # STEPS steps, a checkpoint after every one, one validation round (after the cut), a sanity check
    "max_steps": STEPS, "max_epochs": None, "val_check_interval": STEPS, "check_val_every_n_epoch": None,
    "limit_val_batches": 2, "num_sanity_val_steps": 1, "log_every_n_steps": 1, "enable_progress_bar": False,
    "enable_model_summary": False, "accelerator": "cpu", "devices": 1,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tmp_path_factory.mktemp("resume-data")


def build_system(section: dict):
    """The system of a config's model section, recording the parsed config (defaults filled in), not the
    modules it was handed, as its hyperparameters: what LightningCLI does, so checkpoints hold no pickled
    modules (they are read back with weights_only=True)."""
    import lightning as L
    from jsonargparse import ArgumentParser
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    p = ArgumentParser(exit_on_error=False)
    p.add_subclass_arguments(L.LightningModule, "model", required=True)
    parsed = p.parse_object({"model": section})
    dumped = yaml.safe_load(p.dump(parsed, skip_none=False))["model"]
    hparams = {"_class_path": dumped["class_path"], **dumped.get("init_args", {})}
    with _given_hyperparameters_context(hparams=hparams, instantiator="lightning.pytorch.cli.instantiate_module"):
        return p.instantiate_classes(parsed).model


def fit(system, datamodule, trainer_settings: dict, root: Path, ckpt_path: Path | None = None) -> Path:
    """A Trainer with the YAML's settings and the callbacks `tessera fit` adds that take part in a resume
    (its argument parsing, a second a run, and the metrics plot and encoder export, which touch no weight,
    are left out), fitting ``system`` on ``datamodule`` (from ``ckpt_path``); returns the checkpoint folder."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tasks.cli import TRAINER_DEFAULTS, default_callbacks

    settings = {k: v for k, v in trainer_settings.items() if k not in ("callbacks", "default_root_dir")}
    keep = ModelCheckpoint(every_n_train_steps=1, save_top_k=-1, save_last=True, filename="step{step}",
                           auto_insert_metric_name=False)
    trainer = L.Trainer(**{**TRAINER_DEFAULTS, **settings}, default_root_dir=root,
                        callbacks=[keep, *default_callbacks(outputs=False)])
    trainer.fit(system, datamodule, ckpt_path=ckpt_path)
    return Path(trainer.log_dir) / "checkpoints"


def weights(ckpt: Path) -> tuple[int, dict[str, torch.Tensor]]:
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    return raw["global_step"], raw["state_dict"]


def resume_check(name: str, data: Path, tmp_path: Path, steps: int = STEPS, cut: int = CUT,
                 also: dict | None = None) -> Path:
    """Train ``steps`` steps, resume a fresh system from step ``cut``: the same weights; the straight run's
    checkpoint folder. ``also``: more config on top of the shrunk one."""
    import lightning as L

    from tasks.runs import instantiate

    shipped, shrink = SYSTEMS[name]
    cfg = merge(merge(yaml.safe_load((ROOT / "configs" / shipped).read_text()), shrink(data)), also or {})
    trainer = merge(cfg["trainer"], {**TRAINER, "max_steps": steps, "val_check_interval": steps})
    L.seed_everything(cfg["seed_everything"], verbose=False)
    system, datamodule = build_system(cfg["model"]), instantiate(cfg, "data")
    # the resumed run's own fresh system and data module, as a new process would build them (a copy: the
    # config is parsed once); its global random state is the checkpoint's, restored by RandomState
    fresh = copy.deepcopy((system, datamodule))
    straight = fit(system, datamodule, trainer, tmp_path / "straight")
    L.seed_everything(cfg["seed_everything"], verbose=False)
    resumed = fit(*fresh, trainer, tmp_path / "resumed", ckpt_path=straight / f"step{cut}.ckpt")
    (a_step, a), (b_step, b) = weights(resumed / f"step{steps}.ckpt"), weights(straight / f"step{steps}.ckpt")
    assert a_step == b_step == steps
    differ = [k for k in b if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(b)} tensors differ after the resume, e.g. {differ[:3]}"
    return straight


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_a_run_resumed_from_a_mid_run_checkpoint_ends_with_the_uninterrupted_weights(name, data, tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_CACHE", str(data / "cache"))  # tokenizers trained once, shared by the runs
    resume_check(name, data, tmp_path)


@pytest.mark.parametrize("workers,limit,ended", [(0, None, 0), (1, None, 0), (1, 2, 2)])
def test_a_run_resumed_from_the_checkpoint_at_an_epochs_end_ends_with_the_uninterrupted_weights(
        data, tmp_path, monkeypatch, workers, limit, ended):
    """The test's item histories make 6 BERT4Rec batches an epoch: the checkpoint of step 6 closes epoch 0
    (epoch 2 with 2 batches an epoch), the resumed run starts the next epoch (a new permutation, new cloze
    masks, a new loader iterator) and validates at step 8. A loader worker asks for batches as soon as its
    iterator exists, before Lightning sets the epoch."""
    monkeypatch.setenv("TESSERA_CACHE", str(data / "cache"))
    straight = resume_check("recsys BERT4Rec", data, tmp_path, steps=8, cut=6,
                            also={"data": {"init_args": {"num_workers": workers}},
                                  "trainer": {"limit_train_batches": limit}})
    epochs = [torch.load(straight / f"step{k}.ckpt", weights_only=True)["epoch"] for k in (6, 7)]
    assert epochs == [ended, ended + 1], epochs  # step 6 is the last of its epoch
