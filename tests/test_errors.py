import pytest

from zoo.errors import ConfigError, InvalidArgumentError, UnknownModelError, ZooError, close_matches


def test_errors_are_builtins_too():
    assert issubclass(UnknownModelError, KeyError) and issubclass(UnknownModelError, ZooError)
    assert issubclass(ConfigError, ValueError) and issubclass(InvalidArgumentError, ValueError)


def test_unknown_model_message_lists_close_matches_unquoted():
    err = UnknownModelError("resnt50", ["resnet50", "resnet50.a1_in1k", "resnext50_32x4d"])
    assert err.suggestions[0] == "resnet50"
    assert str(err).startswith("Unknown model 'resnt50'. Did you mean: resnet50")
    assert "python -m zoo list" in str(err)
    with pytest.raises(KeyError):
        raise err


def test_close_matches_offers_tags_of_a_bare_prefix():
    found = close_matches("resnet18", ["resnet34", "resnet18.tv_in1k", "resnet18.a1_in1k"])
    assert found[:2] == ["resnet18.a1_in1k", "resnet18.tv_in1k"]
    assert close_matches("vgg16", ["resnet18", "resnet34"]) == []
