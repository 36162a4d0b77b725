"""Models: the registry of aliases, pulling from Hugging Face, loading and keeping them."""
