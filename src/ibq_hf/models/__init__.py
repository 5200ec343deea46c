"""Model definitions: the IBQ tokenizer (diffusers) and the class-conditional AR model (transformers)."""
