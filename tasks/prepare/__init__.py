"""Data preparation, one module per modality; each registers its ``tessera prepare <name>`` jobs
(``tasks.jobs.job``). Data modules call the same functions from ``prepare_data``."""
