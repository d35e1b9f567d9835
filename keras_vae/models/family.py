"""What a model family is: its class, its kind of latents, its graphs, manifest entry and options.

The exporter, the manifest, the command line and training ask a model's
`Family` instead of probing its attributes. A family is declared once, at the
bottom of its own module, and registered with one line:

>>> register(Family("vqvae", VQVAE, CODES, "discrete codes", options=(...)))

Its model class lists the graphs it exports (`export_graphs()`, a dict of
`keras_vae.models.signatures.GraphSignature`) and describes its latents for
the export manifest (`manifest_latents()`): `{"latent_dim": d, "prior": table}`
for continuous latents (the table `sample_prior` draws from), or a code grid
and its prior for discrete codes. Subclasses belong to the nearest registered
family: `TCVAE` is the VAE family with another regularizer.

Example:

>>> family_of(keras_vae.TCVAE(...)).name
'vae'
>>> FAMILIES.get("vqvae").latent_kind
'codes'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from keras_vae.registry import NO_DEFAULT, Registry, lookup

CONTINUOUS = "continuous"
CODES = "codes"
# Each latent kind: its words in messages, and the command that fits the
# sampler of such latents after training.
LATENT_KINDS = {
    CONTINUOUS: {"words": "continuous latents", "prior_command": "fit-sampler"},
    CODES: {"words": "discrete codes", "prior_command": "train-code-prior"},
}


@dataclasses.dataclass(frozen=True)
class Option:
    """One `keras-vae train` flag of a family, passed to the model's constructor.

    Attributes:
        flag: The flag, `--codebook-size`.
        type: `int`, `float`, `str`, `bool` (a switch) or `dict` (a JSON object).
        default: The value when the flag is not given.
        help: One line for `--help`.
        key: The constructor argument (default: the flag's name, `codebook_size`).
        low: Smallest valid number (`int` and `float` options).
        high: Largest valid number, None for no bound.
        low_open: `low` itself is refused (`float` options).
        what: What the number is, for usage errors (`"a codebook size"`).
        choices: Valid values of a `str` option, or a function returning them
            (a registry's names, read when the parser is built).
        metavar: The value's name in `--help`.
    """

    flag: str
    type: type
    default: object
    help: str
    key: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    what: str | None = None
    choices: tuple | Callable | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The attribute the parsed value is stored under (`codebook_size`)."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def argument(self) -> str:
        """The constructor argument the value is passed as."""
        return self.key or self.dest


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: what the exporter, the manifest and the command line ask of a model.

    Attributes:
        name: The registered name (`keras-vae train --model NAME`).
        model_class: The `keras.Model` subclass `keras-vae train` builds.
        latent_kind: `CONTINUOUS` (z, drawn from a prior table; samplers fitted
            by `fit-sampler`) or `CODES` (grids of discrete codes; a code prior
            trained by `train-code-prior`).
        summary: A few words for `--help` and messages (`"discrete codes"`).
        options: The `keras-vae train` flags of its constructor.
        conditional: Whether it can be conditioned on the data's labels
            (`keras-vae train --conditional`).
        configure: `configure(values) -> constructor arguments`, from
            `{option.argument: value}` of every option; None passes them as
            they are (flags that fold into one argument need it).
    """

    name: str
    model_class: type
    latent_kind: str
    summary: str = ""
    options: tuple = dataclasses.field(default=(), repr=False)
    conditional: bool = False
    configure: Callable | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if self.latent_kind not in LATENT_KINDS:
            raise ValueError(f"Unknown latent kind {self.latent_kind!r} of family {self.name!r}; "
                             f"valid: {sorted(LATENT_KINDS)}")
        flags = [o.flag for o in self.options]
        if len(set(flags)) != len(flags):
            raise ValueError(f"Family {self.name!r} declares a flag twice: {flags}")

    @property
    def continuous(self) -> bool:
        """Whether its latents are continuous z (not discrete codes)."""
        return self.latent_kind == CONTINUOUS

    @property
    def words(self) -> str:
        """Its latent kind in words: `"continuous latents"` or `"discrete codes"`."""
        return LATENT_KINDS[self.latent_kind]["words"]

    @property
    def prior_command(self) -> str:
        """The command that fits what samples its latents (`fit-sampler`, `train-code-prior`)."""
        return LATENT_KINDS[self.latent_kind]["prior_command"]

    def graphs(self, model) -> dict:
        """The graphs `model` exports, `{name: GraphSignature}` (its `export_graphs()`)."""
        return model.export_graphs()

    def manifest_latents(self, model) -> dict:
        """The manifest's description of `model`'s latents and their prior."""
        return model.manifest_latents()

    def manifest_entry(self) -> dict:
        """The manifest's `family` entry, what the device side reads: name and latent kind."""
        return {"name": self.name, "latent_kind": self.latent_kind}

    def config(self, values: Mapping) -> dict:
        """Constructor arguments from option values `{option.dest: value}`."""
        arguments = {o.argument: values[o.dest] for o in self.options}
        return self.configure(arguments) if self.configure is not None else arguments

    def require(self, kind: str, command: str, what) -> None:
        """Refuses `command` unless this family's latents are of `kind`.

        Args:
            kind: The latent kind `command` needs.
            command: What needs it, for the message (`"fit-sampler"`).
            what: What holds the model, for the message (a path, `"this model"`).

        Raises:
            ValueError: one line naming the family and, for a prior command of
                the other kind, the one to use instead.
        """
        if self.latent_kind == kind:
            return
        hint = (f": use {self.prior_command}"
                if command == LATENT_KINDS[kind]["prior_command"] else "")
        raise ValueError(f"{command} needs {LATENT_KINDS[kind]['words']}; {what} is "
                         f"a {self.name} ({self.words}){hint}")


class Families(Registry):
    """The registry of model families, `{name: Family}`, that finds a model's family."""

    def family_of(self, model) -> Family:
        """The family of `model` (an instance or a class): its nearest registered class.

        Raises:
            ValueError: no registered family's class is among its bases.
        """
        cls = model if isinstance(model, type) else type(model)
        for base in cls.__mro__:
            for family in self.values():
                if family.model_class is base:
                    return family
        raise ValueError(f"{cls.__name__} belongs to no keras_vae model family; registered: "
                        f"{sorted(self)}")

    def model_classes(self) -> ModelClasses:
        """`{name: model class}` of the registered families, a live view."""
        return ModelClasses(self)


class ModelClasses(Mapping):
    """`{family name: model class}`, read from a `Families` registry as it is now.

    `get(name)` raises a `ValueError` listing the valid names, as a `Registry` does.
    """

    kind = "model"

    def __init__(self, families: Families):
        self.families = families

    def __getitem__(self, name):
        return self.families[name].model_class

    def __iter__(self):
        return iter(self.families)

    def __len__(self):
        return len(self.families)

    def get(self, name, default=NO_DEFAULT):
        """Returns the model class of family `name`, or `default` when given and unknown.

        Raises:
            ValueError: an unknown name and no `default`, listing the valid ones.
        """
        if default is not NO_DEFAULT:
            return self[name] if name in self.families else default
        return lookup(self, name, self.kind)


FAMILIES = Families("model family")


def register(family: Family) -> Family:
    """Registers `family` under its name: the one line a family module ends with.

    Raises:
        ValueError: the name is taken by another family.
    """
    return FAMILIES.register(family.name, family)


def family_of(model) -> Family:
    """The registered family of `model` (see `Families.family_of`)."""
    return FAMILIES.family_of(model)
