"""Audio-folder data for MERT pretraining: random crops of every audio file under a folder.

Files are probed once at setup (``soundfile.info``): unreadable headers, empty files and
clips shorter than one frame are counted skips (``stats``, printed), never a crash; a sample of
the rest is decoded at setup, so a folder none of whose files decode is an error naming it. A
file that passes the probe but fails to decode later (truncated data, NaN, silence) is dropped
from its batch and counted, so an epoch never dies on one bad file.

Paths may be ``cache:REL`` (under $TESSERA_CACHE); ``cache:audio/notes/train`` (the rendered
note set, configs/audio/tiny.yaml's) is rendered by ``prepare_data`` on first use.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from modalities.audio.io import AUDIO_SUFFIXES, AudioReadError, list_audio_files, load_audio
from modalities.stats import ReadStats

from ..jobs import UserError
from .collate import seeded_generator
from .fetch import cache_path
from .sampler import resumable_train_loader
from .spec import DataSpec

OPTIONS = {"train": "--data.init_args.train", "val": "--data.init_args.val"}
# files decoded at setup to catch a folder whose files all fail to decode before training starts
CHECK_FILES = 32


class AudioCrops(Dataset):
    """(epoch, index) -> (clip (S,) float32, or None with a skip reason). Crops seeded by (seed, epoch, index)."""

    def __init__(self, files: list[tuple[Path, float]], sample_rate: int, crop_seconds: float, seed: int,
                 random_crop: bool = True, min_samples: int = 400):
        self.files, self.sample_rate, self.crop_seconds = files, sample_rate, crop_seconds
        self.seed, self.random_crop, self.min_samples = seed, random_crop, min_samples

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        path, duration = self.files[i]
        offset = 0.0
        if duration > self.crop_seconds:
            if self.random_crop:
                u = torch.rand((), generator=seeded_generator(self.seed, epoch, i)).item()
            else:
                u = 0.5  # evaluation: the middle of the file
            offset = u * (duration - self.crop_seconds)
        try:
            x = load_audio(path, self.sample_rate, self.min_samples, offset_seconds=offset,
                           max_seconds=self.crop_seconds)
        except AudioReadError as e:
            return None, e.reason
        return torch.from_numpy(x), None


def collate_audio(items: list) -> dict:
    """Right-pad clips: input_values (B, S), lengths (B,); items that failed to decode are dropped and counted."""
    clips = [x for x, _ in items if x is not None]
    skipped = [r for x, r in items if x is None]
    if not clips:
        return {"input_values": torch.zeros(0, 0), "lengths": torch.zeros(0, dtype=torch.long), "skipped": skipped}
    S = max(len(c) for c in clips)
    wav = torch.zeros(len(clips), S)
    for row, c in enumerate(clips):
        wav[row, : len(c)] = c
    return {"input_values": wav, "lengths": torch.tensor([len(c) for c in clips]), "skipped": skipped}


class AudioFolderDataModule(L.LightningDataModule):
    """Every audio file under ``train`` (WAV/FLAC/OGG/MP3), cropped to ``crop_seconds`` at random.

    Args:
        train: a folder of audio files (searched recursively); ``cache:REL`` is under $TESSERA_CACHE,
            and ``cache:audio/notes/train`` (the rendered note set) is built on first use.
        val: a folder for validation; None holds out ``val_fraction`` of ``train`` (by file-name hash).
        sample_rate: the encoder's rate; files are downmixed to mono and resampled with soxr.
        crop_seconds: crop length (MERT: 5 s); shorter files are used whole (ragged batches).
        min_seconds: files shorter than this are skipped at setup.
        batch_size, num_workers, seed: loader settings; the order and the crops are seeded.
        max_files: use at most this many files (after sorting), for smoke runs.
    """

    modality = "audio"  # written into the exported encoder folder's meta (tessera embed reads it)

    @property
    def spec(self) -> DataSpec:
        return DataSpec(self.modality)

    def __init__(
        self,
        train: str = "cache:audio/notes/train",
        val: str | None = None,
        val_fraction: float = 0.05,
        sample_rate: int = 24000,
        crop_seconds: float = 5.0,
        min_seconds: float = 0.1,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        max_files: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.stats: dict[str, ReadStats] = {}

    def prepare_data(self) -> None:
        """Render the default note set when a path names it and it is not complete yet; a user's
        folder that does not exist is an error naming its option."""
        from ..prepare.audio import ensure_default_set

        for split in ("train", "val"):
            raw = getattr(self.hparams, split)
            if raw is not None and not ensure_default_set(raw):
                self._folder(split)

    def _folder(self, split: str) -> Path:
        raw = getattr(self.hparams, split)
        path = cache_path(raw)
        if not path.exists():
            raise UserError(f"{OPTIONS[split]} {raw}: {path} does not exist; give a folder of WAV/FLAC/OGG/MP3 "
                            f"files (or cache:audio/notes/train, the note set `tessera prepare audio-notes` renders)")
        return path

    def _probe(self, split: str) -> list[tuple[Path, float]]:
        hp = self.hparams
        stats = ReadStats(unit="files")
        out = []
        root = self._folder(split)
        files = list_audio_files(root)
        if not files:
            raise UserError(f"{OPTIONS[split]} {getattr(hp, split)}: {root} holds no audio files "
                            f"({', '.join(AUDIO_SUFFIXES)}); give a folder of music")
        if hp.max_files is not None:
            files = files[: hp.max_files]
        for path in files:
            stats.files += 1
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError, OSError):
                stats.skip("unreadable")
                continue
            duration = info.frames / info.samplerate if info.samplerate else 0.0
            if duration < max(hp.min_seconds, 400 / hp.sample_rate):
                stats.skip("too_short")
                continue
            out.append((path, duration))
            stats.records += 1
        self.stats[split] = stats
        return out

    def _is_val(self, path: Path) -> bool:
        h = int(hashlib.sha1(f"{self.hparams.seed}:{path.name}".encode()).hexdigest()[:8], 16)
        return h / 0xFFFFFFFF < self.hparams.val_fraction

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if hasattr(self, "train_set"):
            return
        found = self._probe("train")
        if hp.val is not None:
            train, val = found, self._probe("val")
        else:
            train = [f for f in found if not self._is_val(f[0])]
            val = [f for f in found if self._is_val(f[0])]
            if not val and len(train) > 1:
                val = [train.pop()]
        if not train:
            raise UserError(f"{OPTIONS['train']} {hp.train}: no usable audio files under {cache_path(hp.train)} "
                            f"({self.stats['train']}); give a folder of WAV/FLAC/OGG/MP3 files")
        self.train_set = AudioCrops(train, hp.sample_rate, hp.crop_seconds, hp.seed)
        self.val_set = AudioCrops(val, hp.sample_rate, hp.crop_seconds, hp.seed, random_crop=False)
        self._check_decodes()
        for split, stats in self.stats.items():
            print(f"audio data, {split}: {stats}")
        if hp.val is not None and not val:
            print(f"warning: {OPTIONS['val']} {hp.val}: none of the {self.stats['val'].files} files under "
                  f"{cache_path(hp.val)} is usable ({self.stats['val']}); training runs without validation "
                  "(the count is train/skipped_val_files in metrics.json)")

    def _check_decodes(self) -> None:
        """Decode a seeded sample of the training files (the crop each would give): a folder whose
        files pass the header probe but none of which decodes (truncated, NaN, silent) stops here."""
        n = min(len(self.train_set), CHECK_FILES)
        pick = torch.randperm(len(self.train_set), generator=seeded_generator(self.hparams.seed, -2, 0))[:n]
        reasons: dict[str, int] = {}
        for i in pick.tolist():
            clip, reason = self.train_set[(0, i)]
            if clip is not None:
                return
            reasons[reason] = reasons.get(reason, 0) + 1
        raise UserError(f"{OPTIONS['train']} {self.hparams.train}: none of {n} files sampled under "
                        f"{cache_path(self.hparams.train)} decodes ({reasons}); re-encode them (e.g. with ffmpeg) "
                        "or give another folder")

    def write_encoder_assets(self, folder: str | Path) -> None:
        """What a user of the exported encoder needs: the input it was trained on, in config.json's meta."""
        path = Path(folder) / "config.json"
        raw = json.loads(path.read_text())
        raw.setdefault("meta", {}).update({
            "modality": self.modality,
            "sample_rate": self.hparams.sample_rate,  # Hz; inputs are resampled to it (soxr)
            "channels": 1,  # stereo is downmixed (mean of the channels)
            "normalize": "per_clip",  # zero mean, unit variance over each clip's real samples
            "crop_seconds": self.hparams.crop_seconds,  # clip length seen in training
        })
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(raw, indent=2) + "\n")
        partial.replace(path)

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        return resumable_train_loader(self.train_set, hp.batch_size, hp.seed, trainer=self.trainer,
                                      collate_fn=collate_audio, num_workers=hp.num_workers)

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        return DataLoader(self.val_set, batch_size=hp.batch_size, collate_fn=collate_audio, num_workers=hp.num_workers)

    def codebook_fit_loader(self, batches: int) -> list[dict]:
        """``batches`` batches of training files drawn at random (seeded), for the data-dependent teacher
        set-up (k-means codebooks, CQT statistics). A random draw, not the first files by name: sorted
        names group files by folder (one instrument, one genre), which would bias the codebooks."""
        self.setup("fit")
        n = min(len(self.train_set), batches * self.hparams.batch_size)
        pick = torch.randperm(len(self.train_set), generator=seeded_generator(self.hparams.seed, -1, 0))[:n]
        items = [self.train_set[(0, int(i))] for i in pick]
        bs = self.hparams.batch_size
        batches = [b for b in (collate_audio(items[i : i + bs]) for i in range(0, n, bs)) if len(b["lengths"])]
        if not batches:
            reasons = {r: sum(1 for _, x in items if x == r) for r in {x for _, x in items}}
            raise UserError(f"{OPTIONS['train']} {self.hparams.train}: none of the {n} files drawn to fit the "
                            f"teachers under {cache_path(self.hparams.train)} decodes ({reasons}); re-encode them "
                            "or give another folder")
        return batches
