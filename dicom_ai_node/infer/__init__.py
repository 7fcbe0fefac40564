"""Infer: run a routed model on its series, from DICOM images to labels and measurements.

The flow: ``volume`` reads a series into one volume (compressed pixels through
``decode``) -> ``registry`` holds each model's ``manifest`` and its runner, kept warm ->
``runner`` finds the runner a manifest names in ``runners/`` -> the runner executes its
kind of network (``tasks/``) -> ``findings/`` turns the label map into what is reported.
Beside it: ``install`` (``models add``), ``bodyregion`` (the classifier whose answers
routing gets) and ``lease`` (a running job's heartbeat). The package imports nothing
itself, so that the decoder process can import ``decode`` without torch.
"""

__all__: list[str] = []
