"""Inference: predictors (ensembles, TTA), whole-image and tiled prediction of files and folders."""
