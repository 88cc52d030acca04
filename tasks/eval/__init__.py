"""Evaluations, one module per modality; each registers its ``tessera eval <name>`` jobs
(``tasks.jobs.job``). Every evaluation writes JSON (and a plot) into its --out folder."""
