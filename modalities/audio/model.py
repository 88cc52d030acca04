"""The audio encoder (MERT-v1 layout) = waveform frontend + shared backbone, and its named sizes."""

from __future__ import annotations

from ..backbone.backbone import Backbone
from ..backbone.encoder import Encoder, init_weights
from ..hub import PRESETS, create_encoder, register_architecture
from .config import AudioEncoderConfig
from .frontend import AudioFrontend


@register_architecture(AudioEncoderConfig)
class AudioEncoder(Encoder):
    """``encoder(input_values=wav, attention_mask=m, output_hidden_states=True)`` as HF's HubertModel.

    Returns ``last_hidden_state`` (B, T, D) at 75 frames/s, ``mask`` (B, T) and, on request,
    ``hidden_states`` (num_layers + 1 tensors: 13 for 95M, 25 for 330M), zeros at padded frames.
    """

    architecture = "audio_encoder"

    def __init__(self, config: AudioEncoderConfig):
        frontend = AudioFrontend(config)
        backbone = Backbone(config)
        super().__init__(frontend, backbone, config)
        init_weights(self, config.initializer_range)  # HF Hubert's for linears and LayerNorms; convs keep their own

    def frame_lengths(self, attention_mask):
        """(B, S) sample mask (right-padded) -> (B,) real frames per clip, as the forward pass counts them."""
        return self.frontend.frame_lengths(attention_mask.sum(-1))


# the audio sizes, in the preset registry every modality shares (modalities.create_encoder)
AUDIO_PRESETS = ("mert-v1-95m", "mert-v1-330m", "mert-tiny")


@PRESETS.register("mert-v1-95m")
def mert_v1_95m() -> AudioEncoderConfig:
    return AudioEncoderConfig()


@PRESETS.register("mert-v1-330m")
def mert_v1_330m() -> AudioEncoderConfig:
    # the released config: pre-LN ("do_stable_layer_norm"), GroupNorm on the first conv as in 95M,
    # no dropout; its attention_relax (32) rescales logits without changing the softmax
    return AudioEncoderConfig(
        hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, norm="pre",
        feat_extract_norm="group", hidden_dropout=0.0, attention_dropout=0.0,
    )


@PRESETS.register("mert-tiny")
def mert_tiny() -> AudioEncoderConfig:
    # tests and the demo: a narrow conv stack and 2 x 64 transformer layers
    return AudioEncoderConfig(
        hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256, conv_dim=[64] * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def create_audio_encoder(name: str, **overrides) -> AudioEncoder:
    """A randomly initialised audio encoder of a named size, fields overridable."""
    if name not in AUDIO_PRESETS:
        raise ValueError(f"unknown audio encoder preset {name!r}; choose one of: {', '.join(AUDIO_PRESETS)}")
    return create_encoder(name, **overrides)
