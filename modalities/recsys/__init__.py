"""Item-ID sequences: interaction readers, BERT4Rec / SASRec sequences and models."""

from .model import BERT4Rec, BERT4RecConfig, SASRec, SASRecConfig
from .readers import Interactions, read_atomic, read_csv, read_delimited, read_interactions
from .sequences import PAD, SequenceData, build_sequences

__all__ = [
    "BERT4Rec", "BERT4RecConfig", "SASRec", "SASRecConfig", "Interactions", "PAD", "SequenceData", "build_sequences", "read_atomic",
    "read_csv", "read_delimited", "read_interactions",
]
