"""multimodal: a JAX framework for models that see, hear, read and write."""
