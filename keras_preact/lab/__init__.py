"""Lab: the propagation analysis and the paper's grids of runs."""
