"""A sibling module, imported as `settings` the way a script in this folder would."""

START = 0
