"""lightning_grok: grokking in ridge regression and networks (arXiv:2601.19791) on PyTorch Lightning."""

__version__ = "0.1.0"
