"""The UI's error sentences: the file or model named, no server path, no CLI command, no Gradio internals."""

from __future__ import annotations

import gradio as gr
import pytest

from zoo import hub, images, registry
from zoo.errors import InvalidArgumentError, InvalidImageError, UnknownModelError, WeightsUnavailableError
from zoo.ui import feedback


def test_scrub_drops_server_paths_and_cli_sentences_but_keeps_file_names():
    text = (
        "Weights for resnet50.a1_in1k are not in the local store (/srv/zoo/weights) and the Hub is down. "
        "Get them with `python -m zoo fetch resnet50.a1_in1k` where the Hub is reachable. "
        "Cannot read /tmp/gradio/abc123/cat.jpg: denied."
    )
    clean = feedback.scrub(text)
    assert "/srv" not in clean and "/tmp" not in clean and "python -m zoo" not in clean
    assert "`cat.jpg`" in clean and "resnet50.a1_in1k" in clean
    # a sentence that ends with a path keeps its full stop outside the name (was "`x.safetensors.`")
    assert feedback.scrub("They were moved to /srv/zoo/.corrupt/x-1-ab.safetensors. Fetch them again.") == (
        "They were moved to `x-1-ab.safetensors`. Fetch them again.")
    assert feedback.scrub("They were left in place (/srv/zoo/weights is not writable here).") == (
        "They were left in place (`weights/` is not writable here).")  # was "( is not writable here)"
    # a command in brackets goes, not the whole sentence around it (a full store's refusal was shown as "")
    assert feedback.scrub("Not starting: the runs' models need about 45 MB but /srv/zoo has 3 MB free; free some "
                          "space (`python -m zoo runs --rm RUN` deletes old runs).") == (
        "Not starting: the runs' models need about 45 MB but `zoo/` has 3 MB free; free some space.")


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError) as info:
        registry.get("resnt50")
    text = feedback.sentence(info.value)
    assert "no model called 'resnt50'" in text and "Did you mean resnet50" in text and "python" not in text


def test_missing_weights_say_what_a_visitor_can_do_offline_and_online(monkeypatch):
    exc = WeightsUnavailableError("Weights for resnet50.a1_in1k are not in /srv/weights. `python -m zoo fetch x`.")
    online = feedback.sentence(exc, model="resnet50")
    assert "resnet50.a1_in1k" in online and "Try again" in online and "/srv" not in online
    hub.reachability.down("test")
    alone = feedback.sentence(exc, model="resnet50")  # not one model here: none to pick instead
    assert "no other model's are either" in alone and "import weight files" in alone and "not downloaded" not in alone


def test_missing_weights_offline_point_to_the_models_that_are_here(resnet18_file):
    from zoo import weights

    weights.import_file(resnet18_file, "resnet18.a1_in1k")
    hub.reachability.down("test")
    offline = feedback.sentence(WeightsUnavailableError("Weights for resnet50.a1_in1k are not here."),
                                model="resnet50")
    assert "cannot be reached" in offline and 'Pick a model not marked "not downloaded"' in offline


def test_missing_weights_name_their_model_and_other_missing_things_keep_their_words():
    several = WeightsUnavailableError("Weights for resnet34.a1_in1k are not here.", model="resnet34.a1_in1k")
    assert "resnet34.a1_in1k" in feedback.sentence(several)  # was "The weights of this model" (Compare, the lab)
    cifar = WeightsUnavailableError("CIFAR-10 comes from the Hub dataset uoft-cs/cifar10; with no Hub here, use "
                                    "the built-in digits or a zip of class folders.")
    assert feedback.sentence(cifar).startswith("CIFAR-10 comes from")  # was about a model's weights


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not a picture\n" * 20, "not an image in an accepted format"),
        (b"", "empty"),
        (b"8BPS\x00\x01" + b"\x00" * 64, "not an image in an accepted format"),  # a PSD header: refused unread
    ],
)
def test_bad_image_files_are_named_in_one_sentence(tmp_path, data, expected):
    path = tmp_path / "upload" / "holiday.jpg"
    path.parent.mkdir()
    path.write_bytes(data)
    with pytest.raises(InvalidImageError) as info:
        images.decode(str(path))
    text = feedback.sentence(info.value, file=str(path))
    assert text.startswith("holiday.jpg: ") and expected in text and str(tmp_path) not in text
    named = feedback.sentence(InvalidImageError(f"{path}: {info.value}"), file=str(path))  # as classify words it
    assert named == text and named.count("holiday.jpg") == 1
    spaced = path.with_name("my holiday 2024.jpg")
    named = feedback.sentence(InvalidImageError(f"{spaced}: {info.value}"), file=str(spaced))
    assert named.startswith("my holiday 2024.jpg: ") and named.count("2024") == 1 and str(tmp_path) not in named


def test_to_status_returns_the_outputs_and_an_empty_status_or_skips_and_the_sentence():
    @feedback.to_status(2, model_arg=0)
    def handler(model: str) -> tuple[str, str]:
        if model == "bad":
            raise InvalidArgumentError("Pick a model first.")
        if model == "boom":
            raise RuntimeError("/srv/secret exploded")
        return "a", "b"

    assert handler("ok") == ("a", "b", "")
    *skipped, status = handler("bad")
    assert all(s == gr.skip() for s in skipped) and len(skipped) == 2 and status == "⚠️ Pick a model first."
    status = handler("boom")[-1]
    assert "RuntimeError" in status and "/srv" not in status


def test_a_streaming_handler_that_fails_ends_with_its_sentence_in_its_own_status_output():
    @feedback.to_status(3, at=0)
    def stream(depths):
        yield "epoch 1", "<svg/>", None
        if not depths:
            raise InvalidArgumentError("Pick at least one depth.")
        yield "done", "<svg/>", "table"

    assert list(stream([20])) == [("epoch 1", "<svg/>", None), ("done", "<svg/>", "table")]
    *first, (status, curves, table) = list(stream([]))
    assert first == [("epoch 1", "<svg/>", None)] and status == "⚠️ Pick at least one depth."
    assert curves == table == gr.skip()  # the curves drawn so far stay on the page


def test_grad_cam_after_a_failed_classification_leaves_the_sentence_alone():
    from zoo.ui import classify_tab

    assert classify_tab.explain_after("cat.jpg", "resnet50", "⚠️ cat.jpg: not an image.") == (gr.skip(),) * 5


@pytest.mark.parametrize("value", [1.5, "16.5", float("nan"), float("inf"), "many", None])
def test_a_count_that_is_not_a_whole_number_is_refused_not_truncated(value):
    with pytest.raises(InvalidArgumentError, match="Input size in px must be a whole number"):
        feedback.whole(value, "Input size in px")
    assert feedback.whole(32.0, "x") == 32 and feedback.whole("8", "x") == 8


@pytest.mark.parametrize("tab", ["degradation", "transfer"])
def test_the_labs_refuse_a_fractional_size_in_their_status_line(tab):
    """API callers can send any number for a slider: 16.5 px was trained as 16 px (and 1.5 px as 1)."""
    from zoo.ui import degradation_tab, transfer_tab

    if tab == "degradation":
        updates = list(degradation_tab.run_experiment(degradation_tab.DATA_DIGITS, None, [20], "A", 1, 16.5, False))
    else:
        updates = list(transfer_tab.train_lab(transfer_tab.DIGITS, None, ["resnet18.a1_in1k"], ["linear"], 1, 16.5))
    assert updates[-1][0] == "⚠️ Input size in px must be a whole number, not 16.5."
