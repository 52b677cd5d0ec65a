"""Vision-language models: loading their parts, image conversations, the vision objectives."""
