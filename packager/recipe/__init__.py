"""Recipe loading: YAML with line numbers, the published JSON Schema, cross-field rules."""

from packager.recipe.load import Recipe, load_recipe

__all__ = ["Recipe", "load_recipe"]
