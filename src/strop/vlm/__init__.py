"""Vision-language models: their parts (vision tower, projector, language model), image conversations as
training rows, image answers, tiny random VLMs and the shapes dataset. The objectives are objectives/vision.py."""
