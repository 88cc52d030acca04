from .ranking import rank_of_target, ranking_metrics

__all__ = ["rank_of_target", "ranking_metrics"]
