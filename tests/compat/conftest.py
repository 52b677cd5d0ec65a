"""Fixtures of the Axolotl config tests (defined in axolotl_fixtures.py, shared with the measuring script)."""

from axolotl_fixtures import family_models  # noqa: F401 - a fixture, registered by being imported here
