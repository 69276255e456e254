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


def test_every_error_class_lives_in_errors_py():
    import inspect

    import zoo.errors
    from zoo import backends, hub

    defined = {n for n, c in vars(zoo.errors).items() if inspect.isclass(c) and issubclass(c, ZooError)}
    assert {"HubUnreachableError", "FastPathError", "StoreError", "OutOfMemoryError", "Cancelled"} <= defined
    assert hub.HubUnreachableError is zoo.errors.HubUnreachableError  # the old names still import
    assert backends.FastPathError is zoo.errors.FastPathError


def test_out_of_memory_is_a_memory_error_and_the_api_answers_it_with_503():
    import json

    from zoo.apierrors import zoo_error
    from zoo.errors import OutOfMemoryError

    err = OutOfMemoryError("Out of GPU memory at batch size 64 and again at 32: use a smaller --batch-size.")
    assert isinstance(err, MemoryError) and isinstance(err, ZooError)
    response = zoo_error(err)
    body = json.loads(response.body)["error"]
    assert response.status_code == 503 and body["code"] == "out_of_memory"
    assert body["message"].startswith("Out of GPU memory at batch size 64")
