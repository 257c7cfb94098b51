"""The names of a run folder's files: what the training side writes and the report side reads (both import
this, and nothing of each other). docs/run-folders.md describes each."""

CONFIG, RESULT, RECORDS = "config.yaml", "metrics.json", "metrics.jsonl"
DONE, FAILED = "done", "failed"  # the markers of a finished run and of one that ended in an error
RUN_FILES = (CONFIG, RESULT, RECORDS, DONE, FAILED)
