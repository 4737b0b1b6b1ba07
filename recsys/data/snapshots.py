"""Raw MovieLens snapshots and data versions, kept in a project-local DVC workspace.

The workspace ``<paths.home>/data`` is a DVC repo (``dvc init --no-scm``: its .dvc files never
dirty the project's git tree), default remote ``local`` = ``settings.dvc.remote_url``. It holds
``raw/<dataset>/``, ``prepared/<dataset>/``, ``imports/`` (data/ml-20m.zip.dvc and its zip),
``sources/`` (a zip given with ``--source``) and ``tmp/``. A data version is the DVC md5 of a
tracked path (``<md5>.dir`` for a folder). Data commands run the ``dvc`` CLI beside Python.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from recsys.config import Settings
from recsys.data.eventlog import write_release_id
from recsys.errors import DataError, IngestError
from recsys.files import md5 as file_md5
from recsys.files import swap_in
from recsys.home import raw_dir, workspace

log = logging.getLogger(__name__)

REMOTE_NAME = "local"
RAW_FILES = ("ratings.csv", "movies.csv")  # required in every raw snapshot
OPTIONAL_FILES = ("README.txt", "tags.csv")  # licence, description and user tags, when present
IMPORT_FILE = "ml-20m.zip.dvc"  # committed import-url stage, under settings.paths.datasets
_DVC_CORE = {
    "analytics": "false",
    "check_update": "false",
    "autostage": "false",
    "remote": REMOTE_NAME,
}  # as DVC's config file spells them
_OFFLINE_HELP = (
    "could not download {url} ({reason}; is the host reachable from here?) and the DVC remote "
    "does not hold it. Download the zip elsewhere, then point ingest at the local copy: `recsys "
    "ingest --dataset ml-20m --source /path/to/{name}` (or RECSYS__DATA__SOURCE=/path/to/{name});"
    " a folder with the extracted ratings.csv and movies.csv works too."
)


@dataclass(frozen=True)
class IngestResult:
    """Outcome of :func:`ingest`: where the raw snapshot lies and which version it is."""

    dataset: str  # "ml-latest-small" | "ml-20m"
    raw_dir: Path  # folder holding ratings.csv and movies.csv
    data_version: str  # DVC md5 of raw_dir ("<32 hex>.dir")
    pushed: bool  # False when the DVC remote could not be written (a warning is logged)


def init_workspace(settings: Settings) -> Path:
    """Create the DVC workspace if missing, remote ``local`` = ``dvc.remote_url`` (IngestError)."""
    from dvc.config import Config
    from dvc.exceptions import DvcException

    ws = workspace(settings)
    try:
        if not (ws / ".dvc").is_dir():
            ws.mkdir(parents=True, exist_ok=True)
            _dvc(ws, "init", "--no-scm")
            (ws / ".dvcignore").write_text("/tmp/\n")  # ingests in progress
            log.info("initialised DVC workspace %s", ws)
        url = str(settings.dvc.remote_url)
        url = url if "://" in url else str(Path(url).resolve())  # DVC stores paths relative
        config = Config(dvc_dir=str(ws / ".dvc"))
        current = config.read("repo")
        if any(str(current["core"].get(k)).lower() != v for k, v in _DVC_CORE.items()) or (
            current["remote"].get(REMOTE_NAME, {}).get("url") != url
        ):
            with config.edit("repo") as conf:
                conf["core"].update(_DVC_CORE)
                conf["remote"][REMOTE_NAME] = {"url": url}
    except DvcException as exc:
        raise IngestError(f"cannot set up the DVC workspace {ws}: {exc}") from exc
    return ws


def _dvc(ws: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``dvc <args>`` in the workspace; raises IngestError naming the command if it fails."""
    beside = Path(sys.executable).with_name("dvc")
    exe = str(beside) if beside.is_file() else shutil.which("dvc")
    if not exe:
        raise IngestError("no `dvc` command next to Python or on PATH; `pip install -e .` it")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([exe, *args], cwd=ws, env=env, capture_output=True, text=True)
    log.debug("dvc %s -> %d %s", " ".join(args), proc.returncode, proc.stderr.strip())
    if check and proc.returncode != 0:
        raise IngestError(f"`dvc {' '.join(args)}` failed in {ws}: {_dvc_reason(proc)}")
    return proc


def _dvc_reason(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errors = [ln.removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1]


def _dvc_file(path: Path) -> Path:
    return path.with_name(path.name + ".dvc")


def data_version(path: Path) -> str:
    """DVC md5 that ``<path>.dvc`` records (``<md5>.dir`` for a folder); DataError if none."""
    dvc_file = _dvc_file(Path(path))
    if not dvc_file.is_file():
        raise DataError(f"{path} is not tracked by DVC ({dvc_file} missing); run `recsys ingest`")
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    if not outs[0].get("md5"):
        raise DataError(f"{dvc_file} records no md5; track {path} again")
    return str(outs[0]["md5"])


def _push(ws: Path, *targets: Path) -> bool:  # a failed push is logged, not raised
    proc = _dvc(ws, "push", *(str(_dvc_file(t).relative_to(ws)) for t in targets), check=False)
    if proc.returncode != 0:
        log.warning(
            "could not push %s to the DVC remote %s: %s",
            ", ".join(t.name for t in targets),
            REMOTE_NAME,
            _dvc_reason(proc),
        )
    return proc.returncode == 0


def _add(ws: Path, path: Path) -> str:
    _dvc(ws, "add", str(path.relative_to(ws)))
    log.info("tracked %s as %s", path.relative_to(ws), version := data_version(path))
    return version


def track(path: Path, settings: Settings) -> str:
    """``dvc add`` a folder or file inside the workspace, push it, and return its DVC md5.

    Raises DataError if ``path`` is missing or outside :func:`workspace`, IngestError if DVC
    fails; a failed push is only logged (the version is recorded locally all the same).
    """
    ws = init_workspace(settings)
    path = Path(path).resolve()
    if not path.is_relative_to(ws) or path == ws or not path.exists():
        raise DataError(f"cannot track {path}: it must exist inside the DVC workspace {ws}")
    version = _add(ws, path)
    _push(ws, path)
    return version


def restore(path: Path, settings: Settings) -> None:
    """``dvc pull`` a tracked ``path`` back; IngestError if neither cache nor remote has it."""
    ws = init_workspace(settings)
    _dvc(ws, "pull", str(_dvc_file(Path(path).resolve()).relative_to(ws)))


def _extract(zip_path: Path, dest: Path) -> None:
    """Copy RAW_FILES (+ OPTIONAL_FILES) out of a MovieLens zip (top level or one folder down)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = {Path(m).name: m for m in archive.namelist() if m.count("/") <= 1}
            if missing := [n for n in RAW_FILES if n not in members]:
                raise IngestError(f"{zip_path} holds no {missing}; is it a MovieLens release zip?")
            for name in RAW_FILES + OPTIONAL_FILES:
                if name in members:
                    with archive.open(members[name]) as src, (dest / name).open("wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise IngestError(f"{zip_path} is not a readable zip file ({exc})") from exc


def _copy_folder(folder: Path, dest: Path, dataset: str) -> None:
    """Copy RAW_FILES (+ OPTIONAL_FILES) from ``folder`` or ``folder/<dataset>``."""
    found = {
        n: next((p for p in (folder / n, folder / dataset / n) if p.is_file()), None)
        for n in RAW_FILES + OPTIONAL_FILES
    }
    if missing := [n for n in RAW_FILES if found[n] is None]:
        raise IngestError(
            f"{folder} holds no {missing} (looked in it and in {folder / dataset}); "
            f"point --source at a MovieLens {dataset} folder or zip"
        )
    for name, src in found.items():
        if src is not None:
            shutil.copyfile(src, dest / name)


def _add_local_zip(ws: Path, zip_path: Path, md5: str) -> Path:
    """md5-check a local zip and ``dvc add`` it: the object the import stage names (IngestError)."""
    if (actual := file_md5(zip_path)) != md5:
        raise IngestError(
            f"{zip_path} has md5 {actual} but {IMPORT_FILE} expects {md5}; it is "
            "not the MovieLens 20M release: download it again or fix --source"
        )
    copy = ws / "sources" / "ml-20m.zip"
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(zip_path, copy)
    _add(ws, copy)
    return copy


def _fetch_import(ws: Path, imported: Path, committed: Path, url: str, md5: str) -> None:
    """``dvc pull`` (cache, remote), else ``dvc update`` (the URL); IngestError if both fail."""
    rel = str(_dvc_file(imported).relative_to(ws))
    shutil.copyfile(committed, _dvc_file(imported))
    if _dvc(ws, "pull", "--force", rel, check=False).returncode == 0:
        log.info("got %s from the DVC cache/remote", imported.name)
        return
    log.info("%s not in the DVC remote; downloading %s", imported.name, url)
    proc = _dvc(ws, "update", rel, check=False)
    got = None if proc.returncode else data_version(imported)
    if got != md5:
        shutil.copyfile(committed, _dvc_file(imported))  # `dvc update` rewrote it
        imported.unlink(missing_ok=True)
        if got is None:
            raise IngestError(_OFFLINE_HELP.format(url=url, reason=_dvc_reason(proc), name=imported.name))
        raise IngestError(
            f"{url} now has md5 {got} but {IMPORT_FILE} expects {md5}: the "
            "upstream release changed; review it and update the committed .dvc file"
        )


def _gather_ml20m(settings: Settings, ws: Path, dest: Path) -> list[Path]:
    """Fill ``dest`` from the ml-20m zip (or folder); return the tracked path of the zip."""
    source, committed = settings.data.source, settings.paths.datasets / IMPORT_FILE
    if source is not None and source.is_dir():
        log.warning("ingesting extracted files from %s: no zip checksum to verify", source)
        _copy_folder(source, dest, "ml-20m")
        return []
    try:
        stage = yaml.safe_load(committed.read_text())
        (dep,), (out,) = stage["deps"], stage["outs"]
        url, md5 = dep["path"], out["md5"]
    except (OSError, yaml.YAMLError, KeyError, ValueError, TypeError) as exc:
        raise IngestError(f"cannot read {committed} ({exc!r}); restore it from git") from exc
    if source is not None:
        zip_path = _add_local_zip(ws, source, md5)
    else:
        zip_path = ws / "imports" / out["path"]
        zip_path.parent.mkdir(exist_ok=True)
        _fetch_import(ws, zip_path, committed, url, md5)
    _extract(zip_path, dest)
    return [zip_path]


def _gather(settings: Settings, ws: Path, dest: Path) -> list[Path]:
    """Fill ``dest`` with the raw files; return other tracked paths to push with the snapshot."""
    dataset, source = settings.data.dataset, settings.data.source
    if source is not None and not source.exists():
        raise IngestError(f"--source {source} does not exist; give a {dataset} zip or folder")
    if dataset == "ml-20m":
        return _gather_ml20m(settings, ws, dest)
    if source is not None and source.is_file():
        _extract(source, dest)
    else:
        _copy_folder(source or settings.paths.datasets / dataset, dest, dataset)
    return []


def ingest(settings: Settings, check: Callable[[Path], object] | None = None) -> IngestResult:
    """Snapshot ``settings.data.dataset`` into ``raw/<dataset>/``, ``dvc add`` it and push it.

    ml-latest-small: the bundled release or ``data.source`` (folder or zip). ml-20m: the committed
    import-url stage (DVC cache/remote, then grouplens.org) or ``data.source`` (an md5-checked
    zip or an extracted folder). An existing snapshot is replaced only by a complete new one.
    ``check`` (e.g. the ratings_raw suite) runs on the staged folder before it replaces anything;
    whatever it raises propagates and the current snapshot stays.
    Raises IngestError (download failed, md5 mismatch, missing files, DVC failure).
    """
    ws, dataset, final = init_workspace(settings), settings.data.dataset, raw_dir(settings)
    (ws / "tmp").mkdir(exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f"{dataset}-", dir=ws / "tmp"))
    try:
        also_tracked = _gather(settings, ws, staged)
        write_release_id(staged)  # a new release starts a new event log (recsys.data.eventlog)
        if check is not None:
            check(staged)
        versions: list[str] = []
        swap_in(staged, final, then=lambda folder: versions.append(_add(ws, folder)))
        version = versions[0]
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    pushed = _push(ws, *also_tracked, final)
    log.info("ingested %s: %s (pushed=%s)", dataset, version, pushed)
    return IngestResult(dataset, final, version, pushed)
