"""MARBLE-style probing: frozen features from every layer, mean-pooled over time, a probe per task.

    layer_features(encoder, clips)     -> (N, L + 1, D)  per-layer mean over each clip's real frames
                                          (pool="mean+std": (N, L + 1, 2D), the mean and the std)
    spectral_features(clips, kind)     -> (N, F)         CQT or log-mel baseline, mean over time (or 2F)
    linear_probe(train_x, train_y, test_x, test_y) -> test accuracy (the offline demo's quick probe)
    probe_layers(feats, split, y, kind, score, ProbeConfig()) -> per layer: hyperparameters chosen on
                                        valid, then test once (MARBLE's protocol)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .io import normalize
from .masking import length_mask, masked_mean


def batches(clips: list[Tensor], batch_size: int):
    """Right-padded batches: (wav (B, S), lengths (B,))."""
    for i in range(0, len(clips), batch_size):
        chunk = clips[i : i + batch_size]
        S = max(len(c) for c in chunk)
        wav = torch.zeros(len(chunk), S)
        for r, c in enumerate(chunk):
            wav[r, : len(c)] = c
        yield wav, torch.tensor([len(c) for c in chunk])


POOLS = ("mean", "mean+std")


def pool_frames(x: Tensor, mask: Tensor, pool: str = "mean") -> Tensor:
    """(B, T, D) frames, (B, T) real ones -> (B, D) mean over the real frames, or with ``pool="mean+std"``
    (B, 2D): the mean, then the standard deviation (statistics pooling, as in x-vectors)."""
    if pool not in POOLS:
        raise ValueError(f"unknown pooling {pool!r}; choose one of {', '.join(POOLS)}")
    mean = masked_mean(x, mask)  # (B, D)
    if pool == "mean":
        return mean
    std = masked_mean((x - mean[:, None]) ** 2, mask).clamp(min=0).sqrt()  # (B, D)
    return torch.cat([mean, std], -1)


@torch.no_grad()
def layer_features(encoder, clips: list[Tensor], batch_size: int = 32, progress: bool = False,
                   pool: str = "mean") -> Tensor:
    """Pooled hidden states of every layer: (N, num_layers + 1, D), or 2D for ``pool="mean+std"``."""
    from tqdm import tqdm

    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    for wav, lengths in tqdm(list(batches(clips, batch_size)), desc="features", disable=not progress):
        wav, lengths = wav.to(device), lengths.to(device)
        attn = length_mask(lengths, wav.shape[1])
        o = encoder(input_values=normalize(wav, lengths), attention_mask=attn, output_hidden_states=True)
        pooled = [pool_frames(h.float(), o.mask, pool).cpu() for h in o.hidden_states]  # each (B, D or 2D)
        out.append(torch.stack(pooled, 1))  # (B, L + 1, D)
    return torch.cat(out)


@torch.no_grad()
def spectral_features(clips: list[Tensor], kind: str, sample_rate: int = 24000, batch_size: int = 32,
                      cqt_bins: int = 84, cqt_bins_per_octave: int = 12, pool: str = "mean") -> Tensor:
    """Baselines: log CQT (nnAudio, hop 320, fmin 32.7 Hz) or log-mel (128 bands), pooled over real frames
    (``pool``: as ``pool_frames``)."""
    if kind == "cqt":
        from .teachers import CQTTeacher

        cqt = CQTTeacher(sample_rate, n_bins=cqt_bins, bins_per_octave=cqt_bins_per_octave, log=True)
        fn = cqt  # (B, T, F)
    elif kind == "mel":
        import torchaudio

        mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=2048, hop_length=320, n_mels=128)
        fn = lambda w: torch.log(mel(w) + 1e-6).transpose(1, 2)  # noqa: E731  (B, T, 128)
    else:
        raise ValueError(f"unknown baseline feature {kind!r}; choose cqt or mel")
    out = []
    for wav, lengths in batches(clips, batch_size):
        f = fn(wav)  # (B, T, F)
        frames = (lengths // 320 + 1).clamp(max=f.shape[1])
        out.append(pool_frames(f, length_mask(frames, f.shape[1]), pool))
    return torch.cat(out)


def linear_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, l2: float = 1e-3, steps: int = 200,
    hidden: int = 0, seed: int = 0,
) -> float:
    """Standardise on the training set, fit softmax regression (or a 1-hidden-layer MLP when
    ``hidden`` > 0) by full-batch L-BFGS, return test accuracy."""
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    dims = [xtr.shape[1], hidden, classes] if hidden else [xtr.shape[1], classes]
    params = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        params += [(torch.randn(a, b, generator=g) / a**0.5).requires_grad_(), torch.zeros(b, requires_grad=True)]

    def forward(x):
        for i in range(0, len(params), 2):
            x = x @ params[i] + params[i + 1]
            if i + 2 < len(params):
                x = F.gelu(x)
        return x

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(forward(xtr), train_y) + l2 * sum((p**2).sum() for p in params[::2])
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((forward(xte).argmax(1) == test_y).float().mean())


@dataclass
class ProbeConfig:
    """MARBLE's probe and its search (``benchmark/tasks/*/*_base_config.yaml``, ``benchmark/models/probers.py``)."""

    lrs: tuple[float, ...] = (1e-2, 5e-3, 1e-3, 5e-4, 1e-4)  # hp_search space over Adam's lr
    weight_decays: tuple[float, ...] = (0.0,)  # l2_weight_decay (MARBLE: 0, not searched)
    hidden: int = 512  # hidden_layer_sizes [512]; 0: a linear probe
    dropout: float = 0.2  # dropout_p, after the hidden Linear, before ReLU
    epochs: int = 100  # max_epochs (NSynth: 50)
    patience: int = 20  # earlystop_patience, in epochs without a better validation score
    lr_patience: int = 5  # lr_scheduler_patience: ReduceLROnPlateau(factor 0.5) on the validation score
    batch_size: int = 64  # dataloader batch_size
    seed: int = 0  # seeds initialisation and batch order


def _probe_net(d_in: int, d_out: int, cfg: ProbeConfig) -> torch.nn.Module:
    nn = torch.nn
    if not cfg.hidden:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, cfg.hidden), nn.Dropout(cfg.dropout), nn.ReLU(), nn.Linear(cfg.hidden, d_out))


def _loss(kind: str, out: Tensor, y: Tensor) -> Tensor:
    if kind == "multiclass":
        return F.cross_entropy(out, y)
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(out, y)
    return F.mse_loss(out, y)


def fit_probe(x_train: Tensor, y_train: Tensor, x_valid: Tensor, valid_score: Callable[[Tensor], float],
              kind: str, d_out: int, lr: float, weight_decay: float, cfg: ProbeConfig) -> tuple[torch.nn.Module, float, int]:
    """Adam on minibatches, one validation pass per epoch; the weights of the best validation epoch are
    kept (MARBLE's checkpoint on its monitor), the lr halves after ``lr_patience`` flat epochs and
    training stops after ``patience``. Returns (probe in eval mode, its validation score, its epoch)."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = _probe_net(x_train.shape[1], d_out, cfg).to(x_train.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=cfg.lr_patience)
    best, best_state, since, best_epoch = -float("inf"), copy.deepcopy(net.state_dict()), 0, 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        for idx in torch.randperm(len(x_train), generator=g).split(cfg.batch_size):
            opt.zero_grad()
            _loss(kind, net(x_train[idx]), y_train[idx]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            score = valid_score(net(x_valid))
        score = -float("inf") if score != score else score  # NaN (e.g. no scorable tag) never wins
        sched.step(score)
        if score > best:
            best, best_state, since, best_epoch = score, copy.deepcopy(net.state_dict()), 0, epoch
        else:
            since += 1
            if since >= cfg.patience:
                break
    net.load_state_dict(best_state)
    return net.eval(), best, best_epoch


def probe_layers(feats: Tensor, split: list[str], y: Tensor, kind: str,
                 score: Callable[[Tensor, str], dict[str, float]], metric: str, cfg: ProbeConfig,
                 layers: list[int] | None = None, device: str | torch.device | None = None,
                 n_out: int | None = None, progress: bool = False) -> dict:
    """MARBLE's protocol on every layer: for each layer and each (lr, weight decay) of the grid, fit on
    train and score on valid; keep the best; run it once on test. The best layer is the one with the
    best validation score; its test figures are the headline.

    feats (N, L, D); split: "train" / "valid" / "test" per row; y: (N,) long or (N, K) float;
    score(outputs, split_name) -> metrics of that split's rows, ``metric`` the one maximised (outputs
    on the CPU); ``layers``: probe only these (default all); ``device``: where the probes train;
    ``n_out``: output units (default: classes seen, or the targets' width).
    """
    from tqdm import tqdm

    rows = {s: torch.tensor([i for i, t in enumerate(split) if t == s], dtype=torch.long) for s in ("train", "valid", "test")}
    d_out = n_out or (int(y.max()) + 1 if kind == "multiclass" else y.shape[1])
    n_layers = feats.shape[1]
    todo = list(range(n_layers)) if layers is None else sorted(set(layers))
    if not todo or any(not 0 <= i < n_layers for i in todo):
        raise ValueError(f"layers {layers}: the encoder has layers 0..{n_layers - 1} (0: the frontend)")
    dev = torch.device(device or "cpu")
    y_train = y[rows["train"]].to(dev)
    out = []
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    for layer in tqdm(todo, desc="probing layers", disable=not progress):
        x = feats[:, layer].to(dev)  # (N, D)
        best = None
        for lr, wd in grid:
            net, valid, epochs = fit_probe(x[rows["train"]], y_train, x[rows["valid"]],
                                           lambda o: score(o.cpu(), "valid")[metric], kind, d_out, lr, wd, cfg)
            if best is None or valid > best[1]:
                best = (net, valid, epochs, lr, wd)
        net, valid, epochs, lr, wd = best
        if valid == -float("inf"):
            raise ValueError(f"the validation split ({len(rows['valid'])} clips) gives no {metric} at any setting "
                             "(e.g. no tag with both a positive and a negative clip); it needs more clips")
        with torch.no_grad():
            test = score(net(x[rows["test"]]).cpu(), "test")
        out.append({"layer": layer, "valid": valid, "lr": lr, "weight_decay": wd, "best_epoch": epochs, "test": test})
    top = max(out, key=lambda r: r["valid"])
    return {"config": asdict(cfg), "metric": metric, "layers": out, "best_layer": top["layer"],
            "valid": top["valid"], "test": top["test"]}
