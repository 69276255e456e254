from pathlib import Path

import pytest

from zoo.errors import ConfigError
from zoo.settings import REPO_ROOT, Settings


def test_defaults():
    s = Settings.from_env({})
    assert s.weights_dir == REPO_ROOT / "weights"
    assert (s.device, s.host, s.port, s.hf_offline) == ("auto", "127.0.0.1", 7860, False)
    assert s.hf_endpoint == "https://huggingface.co" and s.hf_home is None


def test_every_documented_variable_is_read(tmp_path: Path):
    s = Settings.from_env(
        {
            "ZOO_WEIGHTS_DIR": str(tmp_path),
            "ZOO_DEVICE": "CPU",
            "ZOO_MODEL_MEMORY_MB": "512",
            "ZOO_HOST": "0.0.0.0",
            "ZOO_PORT": "8000",
            "HF_HUB_OFFLINE": "1",
            "HF_ENDPOINT": "http://127.0.0.1:5000/",
            "HF_HOME": str(tmp_path / "hf"),
        }
    )
    assert s == Settings(tmp_path, "cpu", 512, "0.0.0.0", 8000, True, "http://127.0.0.1:5000", tmp_path / "hf")


def test_relative_weights_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"ZOO_WEIGHTS_DIR": "store"}).weights_dir == tmp_path / "store"


def test_a_space_listens_on_all_interfaces():
    assert Settings.from_env({"SPACE_ID": "someone/resnet-zoo"}).host == "0.0.0.0"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ZOO_DEVICE": "tpu"}, "ZOO_DEVICE"),
        ({"ZOO_PORT": "http"}, "ZOO_PORT"),
        ({"ZOO_PORT": "70000"}, "at most 65535"),
        ({"ZOO_MODEL_MEMORY_MB": "0"}, "at least 1"),
        ({"HF_HUB_OFFLINE": "maybe"}, "HF_HUB_OFFLINE"),
        ({"ZOO_BUSY_DOWNLOAD_MBPS": "nan"}, "ZOO_BUSY_DOWNLOAD_MBPS=nan must be at least"),  # else a paced
        ({"ZOO_SHUTDOWN_S": "nan"}, "ZOO_SHUTDOWN_S=nan must be at least"),  # download would sleep for ever
        ({"ZOO_SHUTDOWN_S": "inf"}, "ZOO_SHUTDOWN_S=inf must be at least 0.0 and at most 3600"),
        ({"ZOO_MAX_DOWNLOADS": "0"}, "ZOO_MAX_DOWNLOADS=0 must be at least 1"),
    ],
)
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env)


def test_max_downloads_is_read():
    assert (Settings.from_env({}).max_downloads, Settings.from_env({"ZOO_MAX_DOWNLOADS": "4"}).max_downloads) == (32, 4)


def test_inference_settings_are_read_and_checked():
    s = Settings.from_env({"ZOO_CPU_BACKEND": "ONNX", "ZOO_MAX_BATCH": "8", "ZOO_BATCH_WAIT_MS": "2.5",
                           "ZOO_COMPILE": "1", "ZOO_MAX_IMAGE_PIXELS": "1000", "ZOO_MAX_IMAGE_MB": "3"})
    assert (s.cpu_backend, s.max_batch, s.batch_wait_ms, s.compile, s.max_image_pixels, s.max_image_mb) == (
        "onnx", 8, 2.5, True, 1000, 3)
    d = Settings.from_env({})
    assert (d.cpu_backend, d.max_batch, d.batch_wait_ms, d.compile) == ("auto", 16, 0.0, False)
    for env, name in (({"ZOO_CPU_BACKEND": "tensorrt"}, "ZOO_CPU_BACKEND"), ({"ZOO_MAX_BATCH": "0"}, "ZOO_MAX_BATCH"),
                      ({"ZOO_BATCH_WAIT_MS": "soon"}, "ZOO_BATCH_WAIT_MS"), ({"ZOO_COMPILE": "maybe"}, "ZOO_COMPILE")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(env)
