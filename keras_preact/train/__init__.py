"""Train: model.fit with the paper's recipes, resumable run directories, strategies."""
