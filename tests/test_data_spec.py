"""The data -> model contract: every data module declares a DataSpec; systems check it, not the module."""

from types import SimpleNamespace

import pytest

from tasks.data.audio import AudioFolderDataModule
from tasks.data.code import CodeTaskDataModule, MaskedCodeDataModule
from tasks.data.cxr import ImageReportDataModule, ReportDataModule
from tasks.data.recsys import SequenceDataModule
from tasks.data.spec import DataSpec, require_vocab, spec_of
from tasks.data.text import MaskedTextDataModule


@pytest.mark.parametrize("cls, modality", [
    (MaskedTextDataModule, "text"), (MaskedCodeDataModule, "code"), (CodeTaskDataModule, "code"),
    (ReportDataModule, "text"), (ImageReportDataModule, "text"), (SequenceDataModule, "recsys"),
    (AudioFolderDataModule, "audio"),
])
def test_every_data_module_declares_its_modality_in_its_spec(cls, modality):
    dm = cls.__new__(cls)  # no set-up: the spec exists before the data is read, its sizes None until then
    assert isinstance(dm.spec, DataSpec) and dm.spec.modality == modality
    assert dm.spec.vocab_size is None and dm.spec.num_items is None


def test_the_vocabulary_contract_names_the_option_to_change():
    spec = DataSpec("text", vocab_size=5000)
    require_vocab(spec, 5000, "x")  # equal is enough
    require_vocab(None, 10, "x")  # no data module: nothing to check
    with pytest.raises(ValueError, match=r"5000 tokens.*vocab_size is 4096.*model\.encoder >= 5000"):
        require_vocab(spec, 4096, "model.encoder")


def test_a_system_refuses_data_whose_tokenizer_outgrows_its_embedding():
    import modalities
    from tasks.text import MaskedLMSystem

    system = MaskedLMSystem(modalities.create_encoder("bert-tiny", vocab_size=300))
    trainer = SimpleNamespace(datamodule=SimpleNamespace(spec=DataSpec("text", vocab_size=301)))
    assert spec_of(trainer).vocab_size == 301
    system.trainer = trainer  # what Lightning sets before setup
    with pytest.raises(ValueError, match="301 tokens"):
        system.setup("fit")
