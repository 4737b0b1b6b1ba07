"""Ingest into a real DVC workspace under a temporary home, with a local directory remote.

No network is used: the ml-20m download path is exercised against a throwaway HTTP server on
127.0.0.1 serving a small fake release, with a matching import file in a temporary datasets folder.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from recsys import home
from recsys.config import PROJECT_ROOT, Settings, load_settings
from recsys.data import snapshots
from recsys.errors import DataError, IngestError
from tests.ports import free_port

pytestmark = pytest.mark.integration

BUNDLED = PROJECT_ROOT / "data" / "ml-latest-small"
ML20M_URL = "https://files.grouplens.org/datasets/movielens/ml-20m.zip"
ML20M_MD5 = "cd245b17a1ae2cc31bb14903e1204af3"


def _settings(home: Path, *overrides: str) -> Settings:
    return load_settings(overrides=[f"paths.home={home}", *overrides], env={})


def _remote_objects(settings: Settings) -> set[Path]:
    return {p for p in Path(settings.dvc.remote_url).rglob("*") if p.is_file()}


def _dvc(settings: Settings, *args: str) -> str:
    dvc = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run(
        [dvc, *args], cwd=home.workspace(settings), capture_output=True, text=True, check=True
    )
    return proc.stdout + proc.stderr


def _fake_release(path: Path) -> str:
    """Write a tiny zip laid out like ml-20m.zip; return its md5."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-20m/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,10\n")
        archive.writestr("ml-20m/movies.csv", "movieId,title,genres\n1,Toy Story (1995),Comedy\n")
        archive.writestr("ml-20m/README.txt", "fake release for tests\n")
        archive.writestr("ml-20m/tags.csv", "userId,movieId,tag,timestamp\n")
    return hashlib.md5(path.read_bytes()).hexdigest()


def _import_file(datasets: Path, url: str, zip_path: Path, md5: str) -> None:
    datasets.mkdir(parents=True, exist_ok=True)
    stage = {
        "frozen": True,
        "deps": [{"path": url, "fs_config": {"connect_timeout": 5, "read_timeout": 5}}],
        "outs": [{"md5": md5, "size": zip_path.stat().st_size, "hash": "md5", "path": "ml-20m.zip"}],
    }
    (datasets / "ml-20m.zip.dvc").write_text(yaml.safe_dump(stage, sort_keys=False))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def release_server(tmp_path: Path):
    """Serve a fake ml-20m.zip on 127.0.0.1; yields (url, zip path, md5, stop)."""
    served = tmp_path / "served"
    served.mkdir()
    md5 = _fake_release(served / "ml-20m.zip")
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ml-20m.zip"
    yield url, served / "ml-20m.zip", md5, server.shutdown
    server.shutdown()
    server.server_close()


def test_sample_ingest_snapshots_pushes_and_restores(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    result = snapshots.ingest(settings)
    assert result.dataset == "ml-latest-small"
    assert result.raw_dir == home.raw_dir(settings)
    for name in ("ratings.csv", "movies.csv", "README.txt", "tags.csv"):
        assert (result.raw_dir / name).read_bytes() == (BUNDLED / name).read_bytes()
    assert result.data_version.endswith(".dir") and len(result.data_version) == 36
    assert result.data_version == snapshots.data_version(result.raw_dir)
    assert result.pushed
    assert len(_remote_objects(settings)) == 6  # four files, release.json and the .dir listing
    assert "in sync" in _dvc(settings, "status", "-c", "raw/ml-latest-small.dvc")
    assert not list((home.workspace(settings) / "tmp").iterdir())

    shutil.rmtree(result.raw_dir)
    shutil.rmtree(home.workspace(settings) / ".dvc" / "cache")  # only the remote has it now
    snapshots.restore(result.raw_dir, settings)
    assert (result.raw_dir / "ratings.csv").read_bytes() == (BUNDLED / "ratings.csv").read_bytes()
    assert snapshots.data_version(result.raw_dir) == result.data_version


def test_data_version_is_stable_and_follows_content(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "home")
    first = snapshots.ingest(settings)
    objects = _remote_objects(settings)
    again = snapshots.ingest(settings)
    assert again.data_version == first.data_version
    assert _remote_objects(settings) == objects

    changed = tmp_path / "changed"
    shutil.copytree(BUNDLED, changed)
    with (changed / "ratings.csv").open("a") as ratings:
        ratings.write("1,1,5.0,1700000000\n")
    edited = snapshots.ingest(_settings(tmp_path / "home", f"data.source={changed}"))
    assert edited.data_version != first.data_version
    assert edited.data_version == snapshots.data_version(home.raw_dir(settings))


def test_track_versions_a_prepared_folder(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    folder = home.prepared_dir(settings)
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text('{"n_users": 3}')
    version = snapshots.track(folder, settings)
    assert version.endswith(".dir") and version == snapshots.data_version(folder)
    assert _remote_objects(settings)
    with pytest.raises(DataError, match="inside the DVC workspace"):
        snapshots.track(tmp_path, settings)


def _offline() -> bool:
    try:
        socket.getaddrinfo("files.grouplens.org", 443)
    except OSError:
        return True
    return False


def test_ml20m_unreachable_source_says_how_to_use_a_local_copy(tmp_path: Path) -> None:
    datasets, served = tmp_path / "datasets", tmp_path / "fake.zip"
    url = f"http://127.0.0.1:{free_port()}/ml-20m.zip"
    _import_file(datasets, url, served, _fake_release(served))
    settings = _settings(tmp_path / "home", "data.dataset=ml-20m", f"paths.datasets={datasets}")
    with pytest.raises(IngestError, match="--source") as caught:
        snapshots.ingest(settings)
    assert url in str(caught.value) and "RECSYS__DATA__SOURCE" in str(caught.value)
    assert not home.raw_dir(settings).exists()

    if _offline():  # else the committed import would download 190 MB
        with pytest.raises(IngestError, match="--source") as caught:
            snapshots.ingest(_settings(tmp_path / "home", "data.dataset=ml-20m"))
        assert ML20M_URL in str(caught.value)


def test_ml20m_zip_with_wrong_md5_keeps_the_old_snapshot(tmp_path: Path) -> None:
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    fake = tmp_path / "ml-20m.zip"
    fake_md5 = _fake_release(fake)
    with zipfile.ZipFile(fake) as archive:
        archive.extractall(extracted)
    home = tmp_path / "home"
    good = snapshots.ingest(_settings(home, "data.dataset=ml-20m", f"data.source={extracted}"))

    with pytest.raises(IngestError, match=f"{fake_md5}.*{ML20M_MD5}"):
        snapshots.ingest(_settings(home, "data.dataset=ml-20m", f"data.source={fake}"))
    assert snapshots.data_version(good.raw_dir) == good.data_version
    kept = (good.raw_dir / "ratings.csv").read_bytes()
    assert kept == (extracted / "ml-20m" / "ratings.csv").read_bytes()
    assert not list((home / "data" / "tmp").iterdir())

    with pytest.raises(IngestError, match=f"{fake_md5}.*{ML20M_MD5}"):
        snapshots.ingest(_settings(tmp_path / "fresh", "data.dataset=ml-20m", f"data.source={fake}"))
    assert not (tmp_path / "fresh" / "data" / "raw" / "ml-20m").exists()


def test_ml20m_import_downloads_then_pulls_from_the_remote(tmp_path: Path, release_server) -> None:
    url, served, md5, stop = release_server
    datasets = tmp_path / "datasets"
    _import_file(datasets, url, served, md5)
    settings = _settings(tmp_path / "home", "data.dataset=ml-20m", f"paths.datasets={datasets}")
    first = snapshots.ingest(settings)
    assert sorted(p.name for p in first.raw_dir.iterdir()) == [
        "README.txt",
        "movies.csv",
        "ratings.csv",
        "release.json",
        "tags.csv",
    ]
    ws = home.workspace(settings)
    assert snapshots.data_version(ws / "imports" / "ml-20m.zip") == md5
    assert any(p.name == md5[2:] for p in _remote_objects(settings))

    stop()  # the source is gone: the zip must now come from the DVC remote
    (ws / "imports" / "ml-20m.zip").unlink()
    shutil.rmtree(ws / ".dvc" / "cache")
    again = snapshots.ingest(settings)
    assert again.data_version == first.data_version

    local = snapshots.ingest(
        _settings(
            tmp_path / "other", "data.dataset=ml-20m", f"paths.datasets={datasets}", f"data.source={served}"
        )
    )
    assert local.data_version == first.data_version


def test_committed_import_file_is_a_valid_dvc3_import(tmp_path: Path) -> None:
    committed = PROJECT_ROOT / "data" / "ml-20m.zip.dvc"
    stage = yaml.safe_load(committed.read_text())
    assert stage["frozen"] is True
    assert stage["deps"][0]["path"] == ML20M_URL
    assert stage["outs"][0] == {
        **stage["outs"][0],
        "md5": ML20M_MD5,
        "size": 198702078,
        "hash": "md5",
        "path": "ml-20m.zip",
    }
    from dvc.repo import Repo
    from dvc.stage.utils import compute_md5

    Repo.init(str(tmp_path), no_scm=True).close()
    shutil.copyfile(committed, tmp_path / "ml-20m.zip.dvc")
    with Repo(str(tmp_path)) as repo:
        loaded = repo.stage.load_one(str(tmp_path / "ml-20m.zip.dvc"))
        assert loaded.is_import and compute_md5(loaded) == stage["md5"]
