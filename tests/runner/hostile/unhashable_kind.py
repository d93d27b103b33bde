# Writes a failure whose kind is a list (a set lookup of it raises TypeError) and leaves.
import json
import os
import sys

out = sys.argv[sys.argv.index("--out") + 1]
with open(out, "w") as fh:
    json.dump({"ok": False, "error": {"kind": ["x"]}}, fh)
os._exit(0)
