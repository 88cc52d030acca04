"""Audio for ``tessera embed``: every audio file is one unit, decoded to mono at the encoder's rate
(soxr), normalised per file as in training, cut into chunks of ``--audio-chunk-seconds`` (attention
cost grows with the square of the length), and mean-pooled over all its frames at the last layer
(or ``--audio-layer``). Files that fail to decode (corrupt, NaN, silent, too short) are skipped and
counted; batches are formed by length."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..jobs import UserError
from .base import EMBEDDERS, Collected, Embedder, Unit, files_under


@EMBEDDERS.register("audio")
class AudioEmbedder(Embedder):
    batch_size = 8

    def __init__(self, folder: Path, args: argparse.Namespace):
        super().__init__(folder, args)
        from ..eval.audio import load_audio_encoder

        self.encoder = load_audio_encoder(folder).eval()
        self.sample_rate = self.encoder.config.sample_rate
        n_layers = self.encoder.config.num_layers
        self.layer = args.audio_layer if args.audio_layer >= 0 else n_layers + 1 + args.audio_layer
        if not 0 <= self.layer <= n_layers:
            raise UserError(f"--audio-layer {args.audio_layer}: {folder} has layers 0 (the frontend) to {n_layers}")
        if args.audio_chunk_seconds <= 0:
            raise UserError(f"--audio-chunk-seconds {args.audio_chunk_seconds}: must be above 0")
        self.chunk = int(args.audio_chunk_seconds * self.sample_rate)

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--audio-layer", type=int, default=-1,
                       help="audio: the layer to pool (0: the frontend, -1: the last)")
        p.add_argument("--audio-chunk-seconds", type=float, default=30.0,
                       help="audio: longer files are encoded in chunks of this length, pooled over all frames")
        p.add_argument("--audio-max-seconds", type=float, default=None,
                       help="audio: use at most this much of each file (from its start)")

    def _read(self, path: Path) -> torch.Tensor:
        from modalities.audio.io import load_audio

        min_samples = self.encoder.config.receptive_field
        return torch.from_numpy(load_audio(path, self.sample_rate, min_samples, max_seconds=self.args.audio_max_seconds))

    def collect(self, inputs: list[str]) -> Collected:
        from modalities.audio.io import AUDIO_SUFFIXES, AudioReadError

        c = Collected()
        for path in files_under(inputs, AUDIO_SUFFIXES, "audio"):
            if path.suffix.lower() not in AUDIO_SUFFIXES:
                c.skip(f"not an audio file ({path.suffix or 'no suffix'})")
                continue
            try:
                n = len(self._read(path))  # decoded once here to skip bad files; again in embed()
            except AudioReadError as e:
                c.skip(f"audio {e.reason}")
                continue
            c.units.append(Unit(str(path), path, n, {"seconds": round(n / self.sample_rate, 3)}))
        return c

    def query(self, text: str) -> Path:
        from modalities.audio.io import AudioReadError

        path = Path(text).expanduser()
        try:
            self._read(path)
        except AudioReadError as e:
            raise UserError(f"--query: {e}") from None
        return path

    @torch.no_grad()
    def embed(self, payloads: list[Path]) -> torch.Tensor:
        from modalities.audio.io import normalize
        from modalities.audio.masking import length_mask

        # every file: normalised once, then chunks (each at least one receptive field long)
        chunks, owner = [], []
        for i, path in enumerate(payloads):
            wav = self._read(path)
            wav = normalize(wav[None])[0]  # (S,) zero mean, unit variance over the whole file
            pieces = list(wav.split(self.chunk))
            if len(pieces) > 1 and len(pieces[-1]) < self.encoder.config.receptive_field:
                pieces[-2] = torch.cat([pieces[-2], pieces.pop()])  # a tail too short for a frame joins its neighbour
            chunks += pieces
            owner += [i] * len(pieces)
        sums = torch.zeros(len(payloads), self.encoder.config.hidden_size)
        frames = torch.zeros(len(payloads))
        step = self.args.batch_size or self.batch_size  # chunks through the encoder at once
        for lo in range(0, len(chunks), step):
            group, owners = chunks[lo : lo + step], torch.tensor(owner[lo : lo + step])
            S = max(len(x) for x in group)
            wav = torch.zeros(len(group), S)  # (C, S) right-padded
            for r, x in enumerate(group):
                wav[r, : len(x)] = x
            lengths = torch.tensor([len(x) for x in group])
            out = self.encoder(input_values=wav, attention_mask=length_mask(lengths, S), output_hidden_states=True)
            h = out.hidden_states[self.layer]  # (C, T, D), zeros at padded frames
            real = out.mask.to(h.dtype)  # (C, T)
            sums.index_add_(0, owners, (h * real[..., None]).sum(1))
            frames.index_add_(0, owners, real.sum(1))
        return sums / frames.clamp(min=1)[:, None]  # (B, D) mean over every real frame of each file
