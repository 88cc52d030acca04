"""An encoder = a frontend (raw input -> embeddings + mask) followed by the shared backbone."""

from __future__ import annotations

from torch import nn

from ..hub import register_architecture
from .backbone import Backbone, EncoderOutput
from .config import BackboneConfig, TokenEncoderConfig
from .embeddings import TokenFrontend


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's init: normal(0, std) for linear and embedding weights, zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            if m.bias is not None:  # bias-free LayerNorms (ModernBERT)
                nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    """frontend(*inputs) -> (embeddings, mask) -> backbone -> EncoderOutput.

    Called like an HF model: ``encoder(input_ids=..., attention_mask=..., output_hidden_states=True)``
    returns ``.last_hidden_state`` (B, T, D) and ``.hidden_states``.
    """

    architecture = "encoder"  # name written into checkpoint folders

    def __init__(self, frontend: nn.Module, backbone: Backbone, config: BackboneConfig | None = None):
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.config = config if config is not None else backbone.config

    def forward(self, *args, output_hidden_states: bool = False, **kwargs) -> EncoderOutput:
        x, mask = self.frontend(*args, **kwargs)  # (B, T, D), (B, T)
        return self.backbone(x, mask, output_hidden_states=output_hidden_states)

    def set_attention_backend(self, name: str) -> None:
        self.backbone.set_attention_backend(name)


@register_architecture(TokenEncoderConfig)
class TokenEncoder(Encoder):
    """The token/ID frontend + backbone: BERT-style text, code tokens, item IDs."""

    architecture = "token_encoder"

    def __init__(self, config: TokenEncoderConfig):
        frontend = TokenFrontend(config)
        backbone = Backbone(config)
        super().__init__(frontend, backbone, config)
        init_weights(self, config.initializer_range)

    @property
    def embeddings(self) -> nn.Embedding:
        return self.frontend.word_embeddings
