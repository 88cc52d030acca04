"""Item-ID sequences: interaction readers, BERT4Rec / SASRec sequences and models."""

from .model import BERT4Rec, BERT4RecConfig, SASRec, SASRecConfig
from .readers import Interactions, read_atomic, read_csv, read_delimited, read_interactions
from .recommend import ItemRecommender
from .sequences import PAD, SequenceData, build_sequences

__all__ = [
    "BERT4Rec", "BERT4RecConfig", "ItemRecommender", "SASRec", "SASRecConfig", "Interactions", "PAD", "SequenceData", "build_sequences", "read_atomic",
    "read_csv", "read_delimited", "read_interactions",
]
