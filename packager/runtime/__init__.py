"""Runtime building blocks of the rendered train_gpt.py.

Every module here is ordinary, importable and unit-tested Python. The renderer
(`packager.render`) copies the top-level definitions a recipe needs out of these
modules into one self-contained script; see docs/DESIGN.md for the rules a
module must follow so that it can be rendered.
"""
