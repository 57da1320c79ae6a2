"""shd, Subterranean Homesick Diffusion: a watch-folder daemon that repaints videos frame by frame."""

__version__ = "0.1.0"
