"""Faults: the local archive folder fills up in the middle of an archiving run.

The folder is a real 128 KiB tmpfs mounted for the test (the sessions run as root); where mounting
is not permitted, the real store's writes are made to fail with ENOSPC after a few objects
instead (fault injection on the store's own write_whole): the figure says which was used. Then the
tmpfs is grown (`mount -o remount`), or the injection lifted, and a rerun finishes the job.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from retention_pipelines.stores import archive as archive_module
from retention_pipelines.stores.files import DRAFT_PREFIX
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.faults import clear_failure, fixed_batches, loss, outcome, rerun_outcome
from retention_pipelines_tests.support.figures import record

DUE, BATCH, SMALL, LARGE = 2000, 50, "128k", "64m"


class FullDisk:
    """A small archive folder: a tmpfs of SMALL bytes, or the real store with ENOSPC injected."""

    def __init__(self, folder: Path, monkeypatch):
        self.folder, self.monkeypatch = folder, monkeypatch
        folder.mkdir(parents=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(folder)],
                                 capture_output=True, text=True)
        self.tmpfs = mounted.returncode == 0
        if not self.tmpfs:
            self.writes, real = 0, archive_module.write_whole

            def fills_up(path, data, keep_existing=False):
                self.writes += 1
                if self.writes > 6:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(path, data, keep_existing)

            monkeypatch.setattr(archive_module, "write_whole", fills_up)

    @property
    def how(self) -> str:
        return f"tmpfs of {SMALL}" if self.tmpfs else "injected ENOSPC"

    def grow(self) -> None:
        if self.tmpfs:
            subprocess.run(["mount", "-o", f"remount,size={LARGE}", str(self.folder)], check=True)
        else:
            self.monkeypatch.undo()

    def remove(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.folder)], check=False)


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    disk = FullDisk(tmp_path / "small", monkeypatch)
    yield disk
    disk.remove()


def test_archive_folder_full_mid_run(pg_database, policies, quiz_policy, full_disk):
    """The run fails naming the archive folder and the lack of space; no row is deleted (every
    object is written and verified before the first delete), no torn object or draft is left,
    and once there is room a rerun archives and deletes each row once."""
    bulk_insert_pg(pg_database, DUE, "2 days")
    inserted = remaining_ids(pg_database)
    archive = full_disk.folder / "archive"
    engine = engine_for(fixed_batches(quiz_policy, BATCH, archive=True), policies, pg_database, archive.as_uri())

    message = outcome(lambda: engine.run("disk-full"))
    deleted = len(inserted - remaining_ids(pg_database))
    drafts = [p.name for p in archive.rglob(f"{DRAFT_PREFIX}*")]
    lost = loss(pg_database, inserted, archive.as_uri())
    clear = clear_failure(message, f"archive folder {archive}", "no space")
    full_disk.grow()
    rerun = rerun_outcome(engine, pg_database, inserted, archive.as_uri())
    record(f"faults: archive folder full ({full_disk.how})", "0 lost, failure names the folder and no space",
           f"{deleted} deleted, {len(drafts)} drafts left; "
           f"failed: {(message or 'no failure').replace(str(archive), '<folder>')}; "
           f"rerun {'finished' if rerun is None else 'FAILED'}",
           deleted == 0 and not drafts and lost is None and clear and rerun is None)
    assert message is not None, f"the run succeeded: {SMALL} held every object (make DUE larger)"
    assert deleted == 0, f"{deleted} rows deleted although their archive was never complete"
    assert not drafts, f"drafts left in the archive folder: {drafts[:3]}"
    assert lost is None, lost
    assert clear, f"the failure does not name the archive folder and the lack of space: {message!r}"
    assert rerun is None, rerun
