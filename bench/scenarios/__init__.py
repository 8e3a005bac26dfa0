"""One module per measured figure; each returns a JSON-able dict of its results."""
