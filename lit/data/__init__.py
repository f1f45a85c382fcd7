"""The ``data`` group's code: records, the supervised data set, image inputs, collation, sampling, the label cache,
the demo's synthetic data and converters."""
