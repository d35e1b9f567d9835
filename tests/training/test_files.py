"""Run directories: one writer at a time, `--overwrite` replaces only a keras-vae run, and a
killed run leaves nothing the next run does not clean."""

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from keras_vae import cli, files

FORK = multiprocessing.get_context("fork")


def _previous_run(out: Path, text="old") -> Path:
    with files.run_directory(out) as tmp:
        (tmp / "model.keras").write_text(text)
        (tmp / "history.json").write_text("{}")
    return out


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_overwrite_replaces_a_previous_run(tmp_path):
    out = _previous_run(tmp_path / "run")
    with files.run_directory(out, overwrite=True) as tmp:
        (tmp / "model.keras").write_text("new")
        assert tempfile.gettempdir() == str(tmp / ".tmp")  # converters' temporaries go here
    assert (out / "model.keras").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["model.keras"]  # no .tmp left inside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock, no .old
    assert tempfile.gettempdir() != str(tmp / ".tmp")


@pytest.mark.parametrize("stranger", ["thesis.txt", ".git", "data"])
def test_overwrite_refuses_a_folder_holding_other_files(tmp_path, stranger, capsys):
    out = _previous_run(tmp_path / "run")
    (out / stranger).mkdir() if stranger != "thesis.txt" else (out / stranger).write_text("x")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(files.RunDirectoryError, match=f"holds 1 other entries \\({stranger}\\)"):
        with files.run_directory(out, overwrite=True):
            pytest.fail("the block must not run")
    # The command line says so in one line, before any training.
    code = cli.main(["train", "--dataset", "digits", "--epochs", "1", "--overwrite",
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--overwrite replaces only a previous keras-vae run" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_refuses_root_home_cwd_and_its_parents(tmp_path, monkeypatch):
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    for out in ("/", ".", str(work), str(tmp_path / "home"), str(tmp_path), "~"):
        with pytest.raises(files.RunDirectoryError, match="the root, the home folder"):
            files.check_replaceable(Path(out).expanduser())
    link = tmp_path / "link"
    link.symlink_to(_previous_run(tmp_path / "elsewhere"))
    with pytest.raises(files.RunDirectoryError, match="symbolic link"):
        files.check_replaceable(link)
    (tmp_path / "file").write_text("x")
    with pytest.raises(files.RunDirectoryError, match="is a file"):
        files.check_replaceable(tmp_path / "file")
    files.check_replaceable(_previous_run(tmp_path / "run"))  # a run: accepted
    for out in (".", "..", "/", "~"):  # the same through run_directory, before any work
        with pytest.raises(files.RunDirectoryError, match="the root, the home folder"):
            with files.run_directory(Path(out).expanduser(), overwrite=True):
                pytest.fail("the block must not run")
    assert sorted(p.name for p in work.iterdir()) == []


def _hold(out, started, release):
    """Child process: holds run_directory(out) until told to finish."""
    with files.run_directory(out) as tmp:
        (tmp / "model.keras").write_text("first")
        started.set()
        release.wait(60)


def test_a_second_writer_fails_clearly(tmp_path, capsys):
    out = tmp_path / "run"
    started, release = FORK.Event(), FORK.Event()
    first = FORK.Process(target=_hold, args=(out, started, release))
    first.start()
    try:
        assert started.wait(60)
        with pytest.raises(files.RunDirectoryError,
                           match=rf"Another keras-vae process \(pid {first.pid} on"):
            with files.run_directory(out):
                pytest.fail("the block must not run")
        code = cli.main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and "Another keras-vae process" in err and "Traceback" not in err
    finally:
        release.set()
        first.join(60)
    assert first.exitcode == 0
    assert (out / "model.keras").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _killed(out, overwrite, at):
    """Child process: dies by SIGKILL inside run_directory (`at`: 'block' or 'between')."""
    if at == "between":  # after the old run is moved aside, before the new one lands
        real = os.replace

        def replace(src, dst):
            real(src, dst)
            if ".old-" in str(dst):
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
    with files.run_directory(out, overwrite=overwrite) as tmp:
        (tmp / "model.keras").write_text("half")
        (tmp / ".tmp" / "converter-temp").write_text("x")
        if at == "block":
            os.kill(os.getpid(), signal.SIGKILL)


def _kill(out, overwrite, at):
    child = FORK.Process(target=_killed, args=(out, overwrite, at))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL


def test_a_killed_run_is_cleaned_by_the_next(tmp_path):
    out = tmp_path / "run"
    _kill(out, False, "block")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert any(".run.partial-" in n for n in left) and ".run.lock" in left
    _previous_run(out, "next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "model.keras").read_text() == "next"


def test_a_replace_killed_between_its_renames_puts_the_old_run_back(tmp_path):
    out = _previous_run(tmp_path / "run", "old")
    _kill(out, True, "between")
    assert not out.exists()
    assert any(".run.old-" in p.name for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError, match="already exists"):
        with files.run_directory(out):  # the old run is restored, not lost
            pytest.fail("the block must not run")
    assert (out / "model.keras").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_stale_old_folder_beside_a_run_is_removed(tmp_path):
    out = _previous_run(tmp_path / "run", "current")
    stale = tmp_path / f".run.old-{files.HOST}-{_dead_pid()}"
    stale.mkdir()
    (stale / "model.keras").write_text("older")
    with files.run_directory(out, overwrite=True) as tmp:
        (tmp / "model.keras").write_text("new")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
