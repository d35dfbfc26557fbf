"""train.log's handler (conf/hydra/default.yaml, job_logging): a log line that cannot be written (a full disk) costs
one warning line for the whole file, not Python logging's "--- Logging error ---" traceback for every line.

The run itself still stops with its own one line when the disk is full (its checkpoints and metrics.json cannot be
written either); only the log's lines are dropped. `log_to_file` adds such a handler for a command's own log
(evaluate.log).
"""

import logging
import sys
from pathlib import Path


class LogFileHandler(logging.FileHandler):
    """logging.FileHandler that reports the first failed write in one line and drops the records it cannot write."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        del record
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        reason = getattr(error, "strerror", None) or error
        print(f"[WARNING] {self.baseFilename} cannot be written ({reason}): its later lines are lost; free disk space.",
              file=sys.stderr)


LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"  # the time of each line, as in a run's train.log


def log_to_file(path: Path) -> logging.Handler:
    """Also write this command's log lines into `path` (a LogFileHandler on the root logger); the handler."""
    handler = LogFileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler
