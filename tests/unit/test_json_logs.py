import json
import logging

from leaderboard.logging import JsonFormatter


def test_log_records_become_one_json_object_per_line_with_their_extra_fields():
    record = logging.makeLogRecord({"name": "leaderboard.reaper", "levelname": "INFO", "msg": "requeued %s",
                                    "args": (3,), "job_id": 42})
    line = JsonFormatter().format(record)
    doc = json.loads(line)
    assert (doc["logger"], doc["level"], doc["message"], doc["job_id"]) == ("leaderboard.reaper", "INFO", "requeued 3", 42)
    assert "\n" not in line
