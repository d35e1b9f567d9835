"""The one registry every keras_vae choice list is: a dict of names with `get` and `register`.

Architectures, likelihoods, priors, posteriors, data sources, strategies,
schedules, anomaly scores and export formats are each a `Registry`; the
command line reads its choices from them, so a registered name is a valid
flag value everywhere at once.
"""

from __future__ import annotations


class Registry(dict):
    """A dict from names to objects that knows what it holds.

    Args:
        kind: What the entries are, for messages ("architecture", ...).
        entries: The initial `{name: object}`.

    Example:

    >>> ARCHITECTURES = Registry("architecture", {"mlp": build_mlp})
    >>> ARCHITECTURES.register("tiny", build_tiny)
    >>> ARCHITECTURES.get("mlp")
    """

    def __init__(self, kind: str, entries: dict | None = None):
        super().__init__(entries or {})
        self.kind = kind

    def get(self, name, default=None):  # noqa: D417 - `default` only for dict's signature
        """Returns the entry `name`.

        Raises:
            ValueError: an unknown name, listing the valid ones.
        """
        return lookup(self, name, self.kind)

    def register(self, name: str, obj=None):
        """Adds `obj` under `name`; without `obj`, returns a decorator that does.

        Raises:
            ValueError: `name` is taken by another object.
        """
        def add(value):
            if name in self and self[name] is not value:
                raise ValueError(f"The {self.kind} name {name!r} is already registered.")
            self[name] = value
            return value

        return add if obj is None else add(obj)


def lookup(table: dict, name, kind: str):
    """Returns `table[name]`.

    Args:
        table: The registry, a dict from names to objects.
        name: The requested name.
        kind: What the table holds, for the message ("architecture", ...).

    Raises:
        ValueError: an unknown name, listing the valid ones.

    Example:

    >>> lookup({"mlp": build_mlp}, "mlp", "architecture")
    """
    try:
        return table[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown {kind} {name!r}; valid names: {sorted(table)}") from None
