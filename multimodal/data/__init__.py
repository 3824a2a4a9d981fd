"""Input pipelines: decoding and feature ops (`preprocess`) and grain loaders (`pipeline`)."""
