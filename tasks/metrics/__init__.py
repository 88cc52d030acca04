from .detection import auroc
from .ranking import rank_of_target, ranking_metrics
from .retrieval import dedup_gallery, retrieval_recall, retrieval_recall_any

__all__ = ["auroc", "dedup_gallery", "rank_of_target", "ranking_metrics", "retrieval_recall", "retrieval_recall_any"]
