"""Hydra callbacks (conf/hydra/default.yaml `callbacks:`): what hdmap_train plugs into Hydra's run and multirun.

- RunDirectoryGuard: locks the run (or sweep) directory before Hydra writes anything into it (run_dir.claim);
- JobProgress: one line per finished sweep job in the launching process, whatever the launcher;
- SweepSummary: the sweep summary (hdmap_train.sweep.summary) at the end of a multirun; exit 1 if a job failed;
  with logger=mlflow, the sweep's parent MLflow run, opened at the start and given the summary files at the end.

JobProgress: Hydra's joblib and submitit launchers return only once every job has ended, so it watches the
sweep directory from a thread, started in on_multirun_start and stopped in on_multirun_end, and prints a line
when a job's metrics.json appears or is rewritten (a failed job run again), unless it still waits for its
pictures (background_pictures):

    [sweep] job 1 finished after 0:00:41: draem | source domain_A AUROC 0.6089 | avg target AUROC 0.6137 | ...
"""

import logging
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hdmap_train.background_pictures import PICTURES_PENDING, wait_for_pictures
from hdmap_train.console import summary_line
from hdmap_train.errors import HdmapError
from hdmap_train.mlflow_log import end_sweep, start_sweep
from hdmap_train.results import load_record
from hdmap_train.run_dir import RUN_LOCK, SWEEP_LOCK, claim
from hdmap_train.sweep.summary import write_summary

log = logging.getLogger(__name__)


class RunDirectoryGuard(Callback):
    """Hydra callback: claim the run (or sweep) directory before Hydra writes its config and log into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        self._claim(config, "hydra.run.dir", RUN_LOCK)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        from hdmap_train.devices import check_sharing

        try:  # before the launcher counts its slots with them (a traceback of a resolver otherwise)
            check_sharing(config.get("gpus_per_job", 1), config.get("jobs_per_gpu", 1))
        except (HdmapError, TypeError, ValueError) as exc:
            print(f"[ERROR] {exc}", file=sys.stderr)
            sys.exit(1)
        self._claim(config, "hydra.sweep.dir", SWEEP_LOCK)

    @staticmethod
    def _claim(config: DictConfig, key: str, lock_name: str) -> None:
        HydraConfig.instance().set_config(config)
        try:
            claim(Path(str(OmegaConf.select(config, key))).absolute(), lock_name)
        except HdmapError as exc:  # Hydra would turn an exception here into a warning and go on
            print(f"[ERROR] {exc}", file=sys.stderr)  # Hydra's own log format here has no level
            sys.exit(1)


class JobProgress(Callback):
    """Prints `[sweep] job started: <job folder> at HH:MM:SS` as Hydra writes each job's .hydra/config.yaml (with
    the lock's owner where the job claimed its folder: pid, host, GPU; hydra/launcher=gpus) and
    `[sweep] job N finished after H:MM:SS: <summary line>` (a failed one: its error) as its metrics.json is written,
    whatever the launcher: a thread of the launching process watches the sweep folder.

    Lines go to stdout with print, not logging: under the basic launcher the jobs run in this process and each
    reconfigures logging into its own train.log.
    """

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.finished = 0
        self._sweep_dir: Path | None = None
        self._seen: dict[Path, int] = {}
        self._started: dict[Path, int] = {}
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
        self._started = self._records(STARTED)
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

    def _records(self, name: str = "metrics.json") -> dict[Path, int]:
        """{path: modification time} of every job's metrics.json (or `name`, a path below a job folder) in the sweep
        directory.
        """
        found = {}
        if self._sweep_dir is not None and self._sweep_dir.is_dir():
            for path in self._sweep_dir.glob(f"**/{name}"):
                try:
                    found[path] = path.stat().st_mtime_ns
                except FileNotFoundError:  # kept aside (metrics.corrupt-<time>.json) while we looked
                    continue
        return found

    def _report(self) -> None:
        for path, mtime in sorted(self._records(STARTED).items(), key=lambda item: item[1]):
            if self._started.get(path) != mtime:
                self._started[path] = mtime
                print(f"[sweep] job started: {job_start(path.parent.parent, mtime)}", flush=True)
        for path, mtime in sorted(self._records().items(), key=lambda item: item[1]):
            if self._seen.get(path) == mtime or pictures_pending(path):
                continue
            self._seen[path] = mtime
            self.finished += 1
            print(f"[sweep] job {self.finished} finished{job_line(path, mtime)}", flush=True)


STARTED = ".hydra/config.yaml"  # what Hydra writes into a job's folder as the job starts, whatever the launcher


def job_start(folder: Path, mtime_ns: int) -> str:
    """'<job folder> at 10:00:01', with the owner of its lock when the job claimed the folder since (pid, host, GPU)."""
    line = f"{folder.name} at {datetime.fromtimestamp(mtime_ns / 1e9):%H:%M:%S}"
    lock = folder / RUN_LOCK
    try:
        if lock.stat().st_mtime_ns >= mtime_ns:
            line += f" ({lock.read_text().strip()})"
    except OSError:
        pass
    return line


def pictures_pending(path: Path) -> bool:
    """Whether a job's metrics.json waits for its pictures (background_pictures): the job has not finished yet."""
    try:
        return load_record(path).get("error") == PICTURES_PENDING
    except (OSError, ValueError, AttributeError):
        return False


def job_line(path: Path, mtime_ns: int) -> str:
    """': <summary line>' of one metrics.json, after the time since its run started; a note if it is unreadable."""
    try:
        record = load_record(path)
        line = summary_line(record)
        if not record.get("timestamp"):
            return f": {line}"
        elapsed = datetime.fromtimestamp(mtime_ns / 1e9) - datetime.fromisoformat(record["timestamp"])
        return f" after {str(elapsed).split('.')[0]}: {line}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f": {path} is unreadable ({type(exc).__name__})"


class SweepSummary(Callback):
    """At the end of a multirun, in the launching process: once every job's pictures are drawn, write the sweep
    summary, exit 1 if a job failed. With logger=mlflow: the parent run of the jobs' MLflow runs (mlflow_log).

    Hydra turns exceptions raised in callbacks into warnings, so a failed sweep ends with SystemExit(1).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        try:
            start_sweep(config)
        except HdmapError as exc:  # mlflow not installed: Hydra would only warn
            print(f"[ERROR] {exc}", file=sys.stderr)
            sys.exit(1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        del kwargs
        sweep_dir = Path(config.hydra.sweep.dir)
        wait_for_pictures()  # the jobs whose pictures a helper process still draws
        try:
            table = write_summary(sweep_dir)
        except Exception:  # Hydra would only warn: a sweep without its summary must not look successful
            log.exception("Could not write the summary of %s", sweep_dir)
            end_sweep(config, None, succeeded=False)
            sys.exit(1)
        log.info("Sweep summary: %s", sweep_dir / "summary.md")
        unfinished = table[table["status"] != "success"]
        end_sweep(config, table, succeeded=not len(unfinished))
        if len(unfinished):
            for row in unfinished.itertuples():
                log.error("%s %s: %s", row.status, row.job, row.error)
            log.error("%d of %d jobs did not succeed; see %s", len(unfinished), len(table), sweep_dir / "summary.md")
            sys.exit(1)
