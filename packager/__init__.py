"""golf-pack: render a declarative Parameter Golf recipe into a record folder."""

__version__ = "0.1.0"
