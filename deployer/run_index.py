"""One file that saves readers a round trip per run: ``{output}/{name}/run-index.json.gzip``.

Reading N runs costs one listing of ``runs/`` (which readers make anyway, to
find the commit markers), one GET of this file, and GETs only for the runs it
does not hold yet. Readers keep it: what they had to read one run at a time
they add, and write the whole file back (best effort: a reader without write
access just reads the slow way).

It never decides what is committed: the listing does. An entry is used only
when its run's ``run.json`` is listed with the size and modification time the
entry was made from, so a run whose record was rewritten (a retried schedule,
a timeout record replaced by the run's own) is read again; entries of runs no
longer listed are dropped when the file is written.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deployer.runtimes import storage

if TYPE_CHECKING:
    from pyarrow import fs as pafs

# Not ".gz": pyarrow's filesystems would (de)compress a .gz name themselves, on
# some stores and not others.
INDEX_FILE = "run-index.json.gzip"
FORMAT = 1


@dataclass(frozen=True)
class Stamp:
    """How a committed run's run.json was listed: its size and modification time."""

    size: int
    mtime_ns: int

    def as_list(self) -> list[int]:
        return [self.size, self.mtime_ns]


class RunIndex:
    def __init__(self, filesystem: pafs.FileSystem, root: str, name: str) -> None:
        self.filesystem = filesystem
        self.path = storage.join(root, name, INDEX_FILE)
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            document = json.loads(gzip.decompress(storage.read_bytes(filesystem, self.path)))
        except (FileNotFoundError, OSError, ValueError, EOFError):
            return  # no index yet, or one this reader cannot use: read run by run
        if isinstance(document, dict) and document.get("format") == FORMAT:
            runs = document.get("runs")
            self.entries = runs if isinstance(runs, dict) else {}

    def _entry(self, run_id: str, stamp: Stamp | None) -> dict[str, Any] | None:
        entry = self.entries.get(run_id)
        if entry is None or stamp is None or entry.get("stamp") != stamp.as_list():
            return None
        return entry

    def record(self, run_id: str, stamp: Stamp | None) -> dict[str, Any] | None:
        """The run's record (run.json with its metrics) as indexed, if still current."""
        entry = self._entry(run_id, stamp)
        return None if entry is None else dict(entry["record"])

    def put_record(self, run_id: str, stamp: Stamp | None, record: dict[str, Any]) -> None:
        if stamp is None:
            return
        kept = {key: value for key, value in record.items() if not key.startswith("_")}
        self.entries[run_id] = {"stamp": stamp.as_list(), "record": kept}
        self.dirty = True

    def quality(self, run_id: str, stamp: Stamp | None) -> list[dict[str, Any]] | None:
        """The run's quality rows (see deployer.quality.quality_rows), if indexed."""
        entry = self._entry(run_id, stamp)
        return None if entry is None else entry.get("quality")

    def put_quality(self, run_id: str, stamp: Stamp | None, rows: list[dict[str, Any]]) -> None:
        entry = self._entry(run_id, stamp)
        if entry is None:
            return  # its record is not indexed (or stale): index both together
        entry["quality"] = rows
        self.dirty = True

    def save(self, listed: set[str] | None = None) -> None:
        """Write the index back if it gained entries; with ``listed`` (every run the
        listing found), entries of runs no longer there are dropped."""
        if not self.dirty:
            return
        runs = {
            run_id: entry
            for run_id, entry in self.entries.items()
            if listed is None or run_id in listed
        }
        data = gzip.compress(
            json.dumps({"format": FORMAT, "runs": runs}, separators=(",", ":")).encode(),
            compresslevel=6,
            mtime=0,
        )
        # A reader that may not write: the next one reads run by run too.
        with contextlib.suppress(OSError):
            storage.write_bytes(self.filesystem, self.path, data)
        self.dirty = False
