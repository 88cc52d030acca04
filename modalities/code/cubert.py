"""CuBERT checkpoints: the released TF checkpoint bundles, converted without TensorFlow, and folders
already in HF BERT format; each paired with CuBERT's vocabulary file (tensor2tensor
``SubwordTextEncoder`` format: one quoted subtoken per line).

The release (google-research ``cubert/README.md``) is a TF 1.x checkpoint written by BERT's
``run_pretraining.py`` (``model.ckpt-NNN.index`` + ``.data-00000-of-00001``) plus a vocabulary file;
its BERT configuration appears only in that README: BERT-large (hidden 1024, 24 layers, 16 heads,
intermediate 4096, gelu, dropout 0.1, type_vocab_size 2), vocab_size = the vocabulary's size,
max_position_embeddings = the sequence length (512 or 1024). The converter reads the bundle with
``modalities.tf_bundle`` (no TensorFlow), takes every size the tensors state from their shapes and
the one they cannot state (the head count) from that README, and maps BERT's TF variable names
(``bert/encoder/layer_0/attention/self/query/kernel``, kernels stored (in, out)) onto HF BERT's, so
that the result is an HF BERT folder which ``load_encoder`` / ``tessera import --check`` read:

    convert_cubert_checkpoint("~/cubert/pre_trained_model__epochs_2__length_512", "runs/cubert-hf",
                              vocab="~/cubert/github_python_minus_ethpy150open_deduplicated_vocabulary.txt")
    encoder, tokenizer = load_cubert("runs/cubert-hf")          # or the TF folder itself
    enc = tokenizer.encode(source)
    out = encoder(input_ids=torch.tensor([[tokenizer.cls_id, *enc.ids, tokenizer.sep_id]]))

BERT's TF ``gelu`` is the tanh approximation (google-research/bert ``modeling.py``), so the config
says ``gelu_new``; its LayerNorm epsilon is 1e-12.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from torch import Tensor

from ..hub import load_encoder, register_folder_importer
from .tokenizer import CodeTokenizer, CubertVocab

# the BERT-large configuration the CuBERT README gives (vocab_size and max_position_embeddings come
# from the checkpoint's embedding shapes); HF config keys
CUBERT_CONFIG = {
    "model_type": "bert",
    "architectures": ["BertForPreTraining"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu_new",  # BERT's TF gelu: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "hidden_dropout_prob": 0.1,
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,  # tf.contrib.layers.layer_norm's epsilon
    "pad_token_id": 0,  # CuBERT's vocabulary starts with <pad>_
    "position_embedding_type": "absolute",
}

# TF variable name -> HF BertForPreTraining name; "T" marks a dense kernel stored (in, out), transposed
_L = r"bert/encoder/layer_(\d+)/"
TF_RENAMES = [
    (r"bert/embeddings/(word|position|token_type)_embeddings", "bert.embeddings.{0}_embeddings.weight", ""),
    (r"bert/embeddings/LayerNorm/gamma", "bert.embeddings.LayerNorm.weight", ""),
    (r"bert/embeddings/LayerNorm/beta", "bert.embeddings.LayerNorm.bias", ""),
    (_L + r"attention/self/(query|key|value)/kernel", "bert.encoder.layer.{0}.attention.self.{1}.weight", "T"),
    (_L + r"attention/self/(query|key|value)/bias", "bert.encoder.layer.{0}.attention.self.{1}.bias", ""),
    (_L + r"(attention/output|intermediate|output)/dense/kernel", "bert.encoder.layer.{0}.{1}.dense.weight", "T"),
    (_L + r"(attention/output|intermediate|output)/dense/bias", "bert.encoder.layer.{0}.{1}.dense.bias", ""),
    (_L + r"(attention/output|output)/LayerNorm/gamma", "bert.encoder.layer.{0}.{1}.LayerNorm.weight", ""),
    (_L + r"(attention/output|output)/LayerNorm/beta", "bert.encoder.layer.{0}.{1}.LayerNorm.bias", ""),
    (r"bert/pooler/dense/kernel", "bert.pooler.dense.weight", "T"),
    (r"bert/pooler/dense/bias", "bert.pooler.dense.bias", ""),
    (r"cls/predictions/transform/dense/kernel", "cls.predictions.transform.dense.weight", "T"),
    (r"cls/predictions/transform/dense/bias", "cls.predictions.transform.dense.bias", ""),
    (r"cls/predictions/transform/LayerNorm/gamma", "cls.predictions.transform.LayerNorm.weight", ""),
    (r"cls/predictions/transform/LayerNorm/beta", "cls.predictions.transform.LayerNorm.bias", ""),
    (r"cls/predictions/output_bias", "cls.predictions.bias", ""),
    (r"cls/seq_relationship/output_weights", "cls.seq_relationship.weight", ""),  # stored (2, hidden) already
    (r"cls/seq_relationship/output_bias", "cls.seq_relationship.bias", ""),
]
# TF variables that are not weights of the model, and why they are left behind
TF_DROPPED = {
    r"(^|/)global_step$": "the training step counter",
    r"/adam_[mv]$": "Adam optimizer moments (BERT's AdamWeightDecayOptimizer slots)",
    r"^(AdamWeightDecayOptimizer|Adam)(_\d+)?(/|$)": "optimizer state",
    r"(^|/)(beta1|beta2)_power$": "optimizer state",
    r"^_CHECKPOINTABLE_OBJECT_GRAPH$": "TF's object graph (a string, not a weight)",
}


def _tf_name_to_hf(name: str, value: Tensor) -> tuple[str, Tensor] | None:
    for pattern, target, how in TF_RENAMES:
        if m := re.fullmatch(pattern, name):
            groups = [g.replace("/", ".") for g in m.groups()]
            return target.format(*groups), (value.t().contiguous() if how == "T" else value)
    return None


def convert_tf_bert(tf_state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """BERT TF variables -> (HF BertForPreTraining state dict, {dropped variable: why}). Raises
    KeyError naming every variable that is neither mapped nor on the drop list."""
    out: dict[str, Tensor] = {}
    dropped: dict[str, str] = {}
    unknown = []
    for name, value in tf_state.items():
        if why := next((w for p, w in TF_DROPPED.items() if re.search(p, name)), None):
            dropped[name] = why
        elif (mapped := _tf_name_to_hf(name, value)) is not None:
            out[mapped[0]] = mapped[1]
        else:
            unknown.append(name)
    if unknown:
        raise KeyError(f"{len(unknown)} TF variables are neither BERT weights nor on the drop list: {sorted(unknown)[:10]}")
    return out, dropped


def cubert_hf_config(state: dict[str, Tensor], num_attention_heads: int = CUBERT_CONFIG["num_attention_heads"]) -> dict:
    """The HF config of a converted CuBERT checkpoint: the README's BERT-large settings, every size
    the tensors state read from their shapes (vocabulary, positions, width, depth, feed-forward)."""
    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        positions = state["bert.embeddings.position_embeddings.weight"].shape[0]
        types = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"the checkpoint lacks {e.args[0]} (as TF: bert/...); it is not a BERT checkpoint") from None
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
    if hidden % num_attention_heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of num_attention_heads={num_attention_heads}; "
                         "give the head count the checkpoint was trained with")
    return {**CUBERT_CONFIG, "vocab_size": int(vocab), "hidden_size": int(hidden), "num_hidden_layers": layers,
            "num_attention_heads": num_attention_heads, "intermediate_size": int(intermediate),
            "max_position_embeddings": int(positions), "type_vocab_size": int(types)}


def is_tf_checkpoint(folder: str | Path) -> bool:
    """A folder (or prefix) holding a TF checkpoint bundle and no config.json."""
    path = Path(folder)
    if path.is_dir():
        return not (path / "config.json").is_file() and any(path.glob("*.index"))
    return path.with_name(path.name + ".index").is_file() or (path.suffix == ".index" and path.is_file())


def read_cubert_checkpoint(src: str | Path, num_attention_heads: int = CUBERT_CONFIG["num_attention_heads"],
                           verify: bool = True) -> tuple[dict, dict[str, Tensor], dict]:
    """(HF config, HF state dict, meta) of a CuBERT TF checkpoint (folder, prefix or .index file)."""
    from ..tf_bundle import TFBundle

    bundle = TFBundle(src)
    tf_state = bundle.read(verify=verify)
    state, dropped = convert_tf_bert(tf_state)
    for name in bundle.entries.keys() - tf_state.keys():
        dropped.setdefault(name, "a string or partitioned TF variable, not a BERT weight")
    hf = cubert_hf_config(state, num_attention_heads)
    meta = {"source": str(bundle.index), "format": "tf-checkpoint-v2", "crc32c_checked": verify,
            "config": "BERT-large per google-research cubert/README.md; sizes read from the tensor shapes",
            "dropped": dropped}
    return hf, state, meta


def convert_cubert_checkpoint(src: str | Path, dst: str | Path, vocab: str | Path | None = None,
                              num_attention_heads: int = CUBERT_CONFIG["num_attention_heads"]) -> Path:
    """A CuBERT TF release checkpoint -> an HF BERT folder (config.json + model.safetensors + the
    vocabulary): what ``load_encoder``, ``load_cubert`` and ``tessera import --check`` read.
    ``vocab`` defaults to a CuBERT vocabulary file beside the checkpoint."""
    from safetensors.torch import save_file

    src = Path(src)
    hf, state, meta = read_cubert_checkpoint(src, num_attention_heads)
    vocab_path = Path(vocab) if vocab is not None else find_cubert_vocab(src if src.is_dir() else src.parent)
    vocab_size = CubertVocab.from_file(vocab_path).size
    if vocab_size > hf["vocab_size"]:
        raise ValueError(f"{vocab_path} has {vocab_size} subtokens but the checkpoint's embedding {hf['vocab_size']} "
                         "rows; pair the checkpoint with the vocabulary it was trained with")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors")
    shutil.copy2(vocab_path, out / vocab_path.name)
    hf["_name_or_path"] = str(meta["source"])
    hf["tessera_conversion"] = {k: v for k, v in meta.items() if k != "dropped"}
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    return out


def find_cubert_vocab(folder: str | Path) -> Path:
    """The CuBERT vocabulary file in a folder: a *vocab*.txt whose first line is a quoted subtoken."""
    folder = Path(folder)
    for path in sorted(folder.glob("*vocab*.txt")):
        first = path.open(encoding="utf-8", errors="replace").readline().rstrip("\r\n")
        if len(first) >= 2 and first[0] == first[-1] and first[0] in "'\"":
            return path
    raise FileNotFoundError(
        f"{folder} holds no CuBERT vocabulary (a *vocab*.txt with one quoted subtoken per line); "
        "pass vocab= explicitly"
    )


def load_cubert_tf(src: str | Path, num_attention_heads: int = CUBERT_CONFIG["num_attention_heads"],
                   attention_backend: str | None = None):
    """A TokenEncoder straight from a CuBERT TF checkpoint (converted in memory, through the HF BERT
    importer's strict rename table)."""
    from ..backbone.encoder import TokenEncoder
    from ..backbone.hf_bert import config_from_hf, convert_state_dict, dropped_keys

    hf, state, meta = read_cubert_checkpoint(src, num_attention_heads)
    config = config_from_hf(hf)
    encoder = TokenEncoder(config)
    encoder.load_state_dict(convert_state_dict(state, config), strict=True)
    encoder.meta = {**meta, "model_type": "bert", "name": "cubert",
                    "dropped": {**meta["dropped"], **dropped_keys(state)}}
    if attention_backend is not None:
        encoder.set_attention_backend(attention_backend)
    return encoder.eval()


@register_folder_importer("cubert-tf", recognises=is_tf_checkpoint)
def _load_cubert_release(folder: Path):
    """``load_encoder`` / ``tessera import`` on CuBERT's released TF checkpoint folder (BERT-large, the
    README's config; the vocabulary file beside it is copied by ``tessera import``)."""
    return load_cubert_tf(folder)


def load_cubert(folder: str | Path, vocab: str | Path | None = None, attention_backend: str | None = None,
                num_attention_heads: int = CUBERT_CONFIG["num_attention_heads"]):
    """(encoder, CodeTokenizer) from a CuBERT folder: the TF release checkpoint (converted in memory)
    or an HF-BERT-format folder, and its vocabulary file (default: the one in the folder)."""
    if is_tf_checkpoint(folder):
        encoder = load_cubert_tf(folder, num_attention_heads, attention_backend=attention_backend)
    else:
        encoder = load_encoder(folder, attention_backend=attention_backend)
    vocab_dir = Path(folder) if Path(folder).is_dir() else Path(folder).parent
    tokenizer = CodeTokenizer(CubertVocab.from_file(vocab if vocab is not None else find_cubert_vocab(vocab_dir)))
    if tokenizer.vocab_size > encoder.config.vocab_size:
        raise ValueError(
            f"the CuBERT vocabulary has {tokenizer.vocab_size} subtokens but the checkpoint's embedding has "
            f"{encoder.config.vocab_size} rows; pair the checkpoint with the vocabulary it was trained with"
        )
    encoder.meta = {**getattr(encoder, "meta", {}), "tokenizer": "cubert", "vocab": str(tokenizer.vocab.size)}
    return encoder, tokenizer
