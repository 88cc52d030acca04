"""Waveform batches a caller may hand the audio encoder: empty, float64, bfloat16. Each must work (cast to the
encoder's dtype) or be a ValueError that says what was wrong, never a torch error from inside a conv."""

from __future__ import annotations

import pytest
import torch

from modalities.audio import create_audio_encoder


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create_audio_encoder("mert-tiny").eval()


def test_an_empty_batch_is_a_clear_error(encoder):
    with pytest.raises(ValueError, match="batch"):
        encoder(input_values=torch.zeros(0, 4000))


def test_a_float64_waveform_is_encoded_like_float32(encoder):
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = encoder(input_values=x)
        got = encoder(input_values=x.double())
    torch.testing.assert_close(got[0] if isinstance(got, tuple) else got.last_hidden_state,
                               want[0] if isinstance(want, tuple) else want.last_hidden_state)


def test_a_bfloat16_waveform_is_encoded_or_refused_by_name(encoder):
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0)).bfloat16()
    try:
        with torch.no_grad():
            encoder(input_values=x)
    except ValueError as e:
        assert "bfloat16" in str(e)
