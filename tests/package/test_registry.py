"""`Registry`: a mapping of names with a `get` that lists the valid names."""

from collections.abc import Mapping, MutableMapping

import pytest

from keras_vae.registry import Registry, lookup


def make():
    return Registry("architecture", {"mlp": "MLP", "conv": "CONV"})


def test_registry_is_a_mapping():
    reg = make()
    assert isinstance(reg, Mapping) and isinstance(reg, MutableMapping)
    assert not isinstance(reg, dict)
    assert reg["mlp"] == "MLP" and len(reg) == 2 and list(reg) == ["mlp", "conv"]
    assert "conv" in reg and "lstm" not in reg and {"unhashable": 1} not in reg
    assert dict(reg) == {"mlp": "MLP", "conv": "CONV"} and sorted(reg) == ["conv", "mlp"]
    assert list(reg.items()) == [("mlp", "MLP"), ("conv", "CONV")]
    assert reg == {"mlp": "MLP", "conv": "CONV"} and {**reg} == dict(reg)
    with pytest.raises(KeyError):
        reg["lstm"]


def test_get_honours_its_default():
    reg = make()
    assert reg.get("mlp") == "MLP" and reg.get("mlp", None) == "MLP"
    assert reg.get("lstm", None) is None and reg.get("lstm", "fallback") == "fallback"
    assert reg.get(["unhashable"], 0) == 0


def test_get_without_default_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"Unknown architecture 'lstm'; valid names: "
                                         r"\['conv', 'mlp'\]"):
        make().get("lstm")
    with pytest.raises(ValueError, match="Unknown architecture"):
        make().get(["unhashable"])
    with pytest.raises(ValueError, match=r"valid names: \['a'\]"):
        lookup({"a": 1}, "b", "thing")


def test_register():
    reg = make()
    assert reg.register("tiny", "TINY") == "TINY" and reg["tiny"] == "TINY"
    assert reg.register("tiny", "TINY") == "TINY"  # the same object again: fine

    @reg.register("dense")
    def build_dense():
        return "DENSE"

    assert reg.get("dense") is build_dense and len(reg) == 4
    with pytest.raises(ValueError, match="architecture name 'tiny' is already registered"):
        reg.register("tiny", "OTHER")
    assert reg["tiny"] == "TINY"


def test_item_assignment_and_deletion_replace_entries(monkeypatch):
    reg = make()
    monkeypatch.setitem(reg, "mlp", "PATCHED")
    assert reg.get("mlp") == "PATCHED"
    monkeypatch.undo()
    assert reg["mlp"] == "MLP"
    del reg["conv"]
    assert list(reg) == ["mlp"] and "Registry('architecture'" in repr(reg)


def test_model_classes_get_honours_its_default():
    from keras_vae import training
    from keras_vae.models import VQVAE

    assert training.MODELS.get("vqvae") is VQVAE and training.MODELS.get("vqvae", None) is VQVAE
    assert training.MODELS.get("nope", None) is None and training.MODELS.get("nope", 3) == 3
    with pytest.raises(ValueError, match=r"Unknown model 'nope'; valid names: \[.*'vae'"):
        training.MODELS.get("nope")
