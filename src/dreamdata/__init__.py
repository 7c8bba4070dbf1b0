"""dreamdata: train image diffusion models and dream up labelled training data with them.

The package is layered; each layer talks to the next only through a narrow contract:

* :mod:`dreamdata.data` - datasets decoded once into memory (uint8 NCHW + labels) and batched on-device.
* :mod:`dreamdata.process` - forward corruption processes (Gaussian noise with a beta schedule; later
  cold-diffusion blur) and their training losses.
* :mod:`dreamdata.networks` - denoisers mapping ``(x_t, t, class_labels) -> prediction``.
* :mod:`dreamdata.sampling` - stateless samplers ``(network, process, start, timesteps, ...) -> x_0``.
* :mod:`dreamdata.training` - the resumable training loop and its run directory.
* :mod:`dreamdata.cli` - the ``dreamdata`` command.
"""

__version__ = "0.1.0"
