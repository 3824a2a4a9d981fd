"""Projects: users of the multimodal library, each in its own package.

A project holds its data (a tfds builder, a registered source, tokenizer)
and its experiment configs, and reaches the library only through its
public entry points (`multimodal.train`, the registry, config.imports).
The library never imports a project; a project's configs list its modules
in `config.imports` so their `registry.register` lines run.

  projects/digits/   the built-in demo on the digits_trimodal data.
"""
