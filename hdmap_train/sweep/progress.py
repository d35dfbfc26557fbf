"""One line per finished sweep job in the launching process, whatever the launcher.

Hydra's joblib and submitit launchers return only once every job has ended, so JobProgress (a Hydra callback)
watches the sweep directory from a thread, started in on_multirun_start and stopped in on_multirun_end, and
prints a line when a job's metrics.json appears or is rewritten (a failed job run again), unless it still
waits for its pictures (background_pictures):

    [sweep] job 1 finished after 0:00:41: draem | source domain_A AUROC 0.6089 | avg target AUROC 0.6137 | ...
"""

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hdmap_train.background_pictures import PICTURES_PENDING, wait_for_pictures
from hdmap_train.outputs import summary_line


class JobProgress(Callback):
    """Prints `[sweep] job N finished after H:MM:SS: <summary line>` for each job as its metrics.json is written.

    Lines go to stdout with print, not logging: under the basic launcher the jobs run in this process and each
    reconfigures logging into its own train.log.
    """

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.finished = 0
        self._sweep_dir: Path | None = None
        self._seen: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict:
        """Launchers pickle the callbacks into their job processes, which only need the settings."""
        return {"interval_s": self.interval_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        self._sweep_dir = Path(config.hydra.sweep.dir)
        self._seen = self._records()  # a re-run: jobs already there are reported only when written again
        if self._seen:
            print(f"[sweep] {len(self._seen)} job(s) of {self._sweep_dir} have a metrics.json already; "
                  "finished ones are not trained again", flush=True)
        self._thread = threading.Thread(target=self._watch, name="hdmap-job-progress", daemon=True)
        self._thread.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        del config, kwargs
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        wait_for_pictures()  # the jobs whose pictures a helper process still draws
        self._report()  # jobs that ended since the last look

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._report()

    def _records(self) -> dict[Path, int]:
        """{metrics.json path: modification time} of every job of the sweep directory."""
        found = {}
        if self._sweep_dir is not None and self._sweep_dir.is_dir():
            for path in self._sweep_dir.rglob("metrics.json"):
                try:
                    found[path] = path.stat().st_mtime_ns
                except FileNotFoundError:  # kept aside (metrics.corrupt-<time>.json) while we looked
                    continue
        return found

    def _report(self) -> None:
        for path, mtime in sorted(self._records().items(), key=lambda item: item[1]):
            if self._seen.get(path) == mtime or pictures_pending(path):
                continue
            self._seen[path] = mtime
            self.finished += 1
            print(f"[sweep] job {self.finished} finished{job_line(path, mtime)}", flush=True)


def pictures_pending(path: Path) -> bool:
    """Whether a job's metrics.json waits for its pictures (background_pictures): the job has not finished yet."""
    try:
        return json.loads(path.read_text()).get("error") == PICTURES_PENDING
    except (OSError, ValueError, AttributeError):
        return False


def job_line(path: Path, mtime_ns: int) -> str:
    """': <summary line>' of one metrics.json, after the time since its run started; a note if it is unreadable."""
    try:
        record = json.loads(path.read_text())
        line = summary_line(record)
        if not record.get("timestamp"):
            return f": {line}"
        elapsed = datetime.fromtimestamp(mtime_ns / 1e9) - datetime.fromisoformat(record["timestamp"])
        return f" after {str(elapsed).split('.')[0]}: {line}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f": {path} is unreadable ({type(exc).__name__})"
