"""The one registry every keras_vae choice list is: a mapping of names with `get` and `register`.

Architectures, likelihoods, priors, posteriors, data sources, strategies,
schedules, anomaly scores and export formats are each a `Registry`; the
command line reads its choices from them, so a registered name is a valid
flag value everywhere at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

# What `get` sees when no default is given (None is a valid default).
NO_DEFAULT = object()


class Registry(MutableMapping):
    """A mapping from names to objects that knows what it holds.

    A `collections.abc.MutableMapping`: `registry[name]`, `name in registry`,
    iteration over the names, `len`, `items()`. `get(name)` raises a
    `ValueError` listing the valid names where a dict would return None;
    `register` refuses to rebind a name to another object, while item
    assignment replaces an entry (as a test's `monkeypatch.setitem` does).

    Args:
        kind: What the entries are, for messages ("architecture", ...).
        entries: The initial `{name: object}`.

    Example:

    >>> ARCHITECTURES = Registry("architecture", {"mlp": build_mlp})
    >>> ARCHITECTURES.register("tiny", build_tiny)
    >>> ARCHITECTURES.get("mlp")
    >>> ARCHITECTURES.get("big", None)  # None
    >>> sorted(ARCHITECTURES)
    ['mlp', 'tiny']
    """

    def __init__(self, kind: str, entries: dict | None = None):
        self.kind = kind
        self._entries = dict(entries or {})

    def __getitem__(self, name):
        return self._entries[name]

    def __setitem__(self, name, obj) -> None:
        self._entries[name] = obj

    def __delitem__(self, name) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable name is no entry
            return False

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self._entries!r})"

    def get(self, name, default=NO_DEFAULT):
        """Returns the entry `name`, or `default` when it is given and `name` is unknown.

        Args:
            name: The requested name.
            default: What to return for an unknown name; without it, an
                unknown name raises.

        Raises:
            ValueError: an unknown name and no `default`, listing the valid names.
        """
        if default is not NO_DEFAULT:
            return self._entries[name] if name in self else default
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


def lookup(table: Mapping, name, kind: str):
    """Returns `table[name]`.

    Args:
        table: The registry, a mapping from names to objects.
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
