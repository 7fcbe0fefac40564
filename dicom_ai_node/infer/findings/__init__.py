"""Infer: what a label map reports: measurements, lesions one by one, clusters, cine phases."""

__all__: list[str] = []
