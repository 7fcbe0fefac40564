"""Testing: DICOM series and phantoms for tests, benchmarks, training; never imported by a stage."""
