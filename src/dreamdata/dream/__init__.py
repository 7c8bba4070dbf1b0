"""Dreaming labelled datasets with a trained diffusion model.

* :mod:`~dreamdata.dream.writer` - chunked, resumable, ``torchrun``-sharded generation into an image
  folder and/or npz.
* :mod:`~dreamdata.dream.manifest` - what made a dataset, and whether a re-run may resume it.
* :mod:`~dreamdata.dream.filtering` - keep the top fraction per class by a classifier's confidence.
* :mod:`~dreamdata.dream.load` - read a synthetic set back, checked against the real dataset.
"""
