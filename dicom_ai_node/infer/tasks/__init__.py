"""Infer: the kinds of network a model is: slice-wise segmentation, image classification."""

__all__: list[str] = []
