"""Built-in datasets (tfds builders writing array_record, no TensorFlow)."""
