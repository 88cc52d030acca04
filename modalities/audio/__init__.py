"""Music audio (MERT-v1 layout): waveform frontend, teachers, readers, MERT-v1 importer."""

from . import hf_mert as _hf_mert  # noqa: F401  (registers the "mert_model" and "hubert" importers)
from .config import AudioEncoderConfig
from .frontend import AudioFrontend
from .model import AUDIO_PRESETS, AudioEncoder, create_audio_encoder

__all__ = ["AUDIO_PRESETS", "AudioEncoder", "AudioEncoderConfig", "AudioFrontend", "create_audio_encoder"]
